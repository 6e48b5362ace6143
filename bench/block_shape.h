/* block_shape.h - the ConditionalRoutedTransformerBlock shapes the
   benchmarks time (c5-cuda-bench block and parts, colt5-bench block) and
   their model FLOPs (docs/flops.md), in one place so that the two
   benchmarks time the same block and count it the same way. */
#ifndef C5_BENCH_BLOCK_SHAPE_H
#define C5_BENCH_BLOCK_SHAPE_H

#include "colt5.h"

/* The CUDA issue's block for sequences of n tokens: dim 512, 8 light and 8
   heavy heads of 64, light window 128, ff mults 0.5 and 4, one kv route,
   the router's defaults, straight-through, n/16 heavy tokens for q, kv and
   the feed-forward. */
c5_block_config block_shape_issue(long n);
/* colt5-bench's CPU block: the issue's at dim 256 with 4 + 4 heads of 64. */
c5_block_config block_shape_small(long n);
/* The shape called name ("small", "issue") for n tokens: 0, or -1 for an
   unknown name. */
int block_shape_by_name(const char *name, long n, c5_block_config *out);
#define BLOCK_SHAPE_NAMES "small or issue"

/* Model FLOPs of one forward of batch sequences of n tokens (docs/flops.md):
   2 per multiply-add of the block's matrix products, only the work a token
   really has. Forward+backward counts 3 times as much. */
double block_shape_flops(const c5_block_config *cfg, long batch, long n);

#endif

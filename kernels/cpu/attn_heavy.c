/* attn_heavy.c - the heavy-branch Attention's arithmetic on the CPU (layouts
   in kernels.h): the key/value slots with the null slot and the kv score,
   their gradients, and the per-head softmax attention over [batch, routes]
   (one head's scores for C5K_HEAVY_ROWS query rows at a time). Element
   loops run over rows under OpenMP; every sum runs in one fixed order
   within a row, so results do not depend on the thread count. */
#include <math.h>
#include <string.h>
#include "cpu.h"

/* kv slots: slot 0 the null key/value of each head, then v * kscore and k * kscore^mk */
c5_status c5k_heavy_kv_assemble_cpu(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *kvraw,
                                    const c5_real *kscore, const c5_real *null_kv, c5_real *kv)
{
  const long batch = A->batch, nk = A->nk;
  const int R = A->routes, hpr = A->heads / R, dh = A->dim_head, mk = A->multiply_keys_by_score;
  const long D = (long)A->heads * dh, L = 2L * hpr * dh, n1 = nk + 1;
#pragma omp parallel for schedule(static)
  for (long row = 0; row < batch * R * n1; row++) {
    long br = row / n1, j = row % n1;
    int r = (int)(br % R);
    c5_real *dst = kv + row * L;
    if (j == 0) {
      for (int hh = 0; hh < hpr; hh++) {
        long h = (long)r * hpr + hh;
        memcpy(dst + (long)hh * 2 * dh, null_kv + h * dh, (size_t)dh * sizeof *dst);
        memcpy(dst + (long)hh * 2 * dh + dh, null_kv + D + h * dh, (size_t)dh * sizeof *dst);
      }
      continue;
    }
    long t = br * nk + (j - 1);   /* token index into [b, R, nk] */
    const c5_real *src = kvraw + t * L;
    c5_real ks = kscore ? kscore[t] : (c5_real)1;
    for (int hh = 0; hh < hpr; hh++) {
      const c5_real *kr = src + (long)hh * 2 * dh, *vr = kr + dh;
      c5_real *kd = dst + (long)hh * 2 * dh, *vd = kd + dh;
      for (int e = 0; e < dh; e++) {
        vd[e] = kscore ? vr[e] * ks : vr[e];
        kd[e] = kscore && mk ? kr[e] * ks : kr[e];
      }
    }
  }
  return C5_OK;
}

/* the kv score's gradient, in place in slots 1..nk; dkscore sums each head's v part, then its k part */
c5_status c5k_heavy_kv_score_backward_cpu(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *kvraw,
                                          const c5_real *kscore, c5_real *dkv, c5_real *dkscore)
{
  const long nk = A->nk;
  const int hpr = A->heads / A->routes, dh = A->dim_head, mk = A->multiply_keys_by_score;
  const long L = 2L * hpr * dh, n1 = nk + 1;
#pragma omp parallel for schedule(static)
  for (long t = 0; t < A->batch * A->routes * nk; t++) {
    long br = t / nk, j = t % nk;
    c5_real *dst = dkv + (br * n1 + 1 + j) * L;
    const c5_real *src = kvraw + t * L;
    c5_real ks = kscore[t];
    double dks = 0;
    for (int hh = 0; hh < hpr; hh++) {
      c5_real *kd = dst + (long)hh * 2 * dh, *vd = kd + dh;
      const c5_real *kr = src + (long)hh * 2 * dh, *vr = kr + dh;
      for (int e = 0; e < dh; e++) { dks += (double)vd[e] * vr[e]; vd[e] *= ks; }
      if (mk)
        for (int e = 0; e < dh; e++) { dks += (double)kd[e] * kr[e]; kd[e] *= ks; }
    }
    if (dkscore) dkscore[t] = (c5_real)dks;
  }
  return C5_OK;
}

/* null_kv's gradient: its slot-0 rows added in batch order (batch * 2 D adds: not worth threads) */
c5_status c5k_heavy_null_kv_grad_cpu(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *dkv, double *gnull)
{
  const int R = A->routes, hpr = A->heads / R, dh = A->dim_head;
  const long D = (long)A->heads * dh, L = 2L * hpr * dh, n1 = A->nk + 1;
  for (long b = 0; b < A->batch; b++)
    for (int r = 0; r < R; r++) {
      const c5_real *g0 = dkv + (b * R + r) * n1 * L;
      for (int hh = 0; hh < hpr; hh++) {
        long h = (long)r * hpr + hh;
        for (int e = 0; e < dh; e++) {
          gnull[h * dh + e] += g0[(long)hh * 2 * dh + e];
          gnull[D + h * dh + e] += g0[(long)hh * 2 * dh + dh + e];
        }
      }
    }
  return C5_OK;
}

/* The op's score blocks in ctx work: two [C5K_HEAVY_ROWS, n1] blocks, the rest for the GEMMs. */
static c5_status score_blocks(c5k_ctx *ctx, const c5k_heavy_attn *A, const char *op, c5_real **s, c5_real **t,
                              c5k_ctx *rest)
{
  const long used = c5k_heavy_attn_work(A);
  if (ctx->work_len < used)
    return C5K_ERR(C5_ERR_ARG, "cpu %s: work of %ld doubles, nq %ld and nk %ld need %ld", op, ctx->work_len, A->nq,
                   A->nk, used);
  *s = (c5_real *)ctx->work;
  *t = *s + (A->nq < C5K_HEAVY_ROWS ? A->nq : C5K_HEAVY_ROWS) * (A->nk + 1);
  *rest = (c5k_ctx){ .work = ctx->work + used, .work_len = ctx->work_len - used };
  return C5_OK;
}

/* Each head's K and V are strided views of kv (ld = L) that the per-head
   GEMMs read directly; a block of query rows at a time: its scores, their
   softmax rows in parallel, its rows of o. */
c5_status c5k_heavy_attn_forward_cpu(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *q, const c5_real *kv,
                                     const uint8_t *kmask, double *lse, c5_real *o)
{
  const long batch = A->batch, nq = A->nq, nk = A->nk;
  const int H = A->heads, R = A->routes, hpr = H / R, dh = A->dim_head;
  const long D = (long)H * dh, L = 2L * hpr * dh, n1 = nk + 1;
  const double scale = 1.0 / sqrt((double)dh);
  c5_real *p, *unused;
  c5k_ctx rest;
  c5_status st = score_blocks(ctx, A, "heavy_attn_forward", &p, &unused, &rest);
  if (st != C5_OK) return st;

  for (long b = 0; b < batch; b++)
    for (int h = 0; h < H; h++) {
      const long off = (b * R + h / hpr) * n1 * L + (long)(h % hpr) * 2 * dh;
      const uint8_t *m = kmask ? kmask + (b * R + h / hpr) * nk : NULL;   /* key j >= 1 is m[j - 1] */
      for (long i0 = 0; i0 < nq; i0 += C5K_HEAVY_ROWS) {
        const long mb = nq - i0 < C5K_HEAVY_ROWS ? nq - i0 : C5K_HEAVY_ROWS;
        const c5_real *qh = q + (b * nq + i0) * D + (long)h * dh;
        double *lrow = lse + (b * H + h) * nq + i0;
        /* scores: S = q_h k_h^T dh^-1/2 */
        st = c5k_gemm_cpu(&rest, 0, 1, mb, n1, dh, scale, qh, D, kv + off, L, 0.0, p, n1);
        if (st != C5_OK) return st;
        /* softmax over each row (the row max first); masked keys get 0 (the reference's -finfo.max
           underflows to exactly 0 because the null slot always takes part) */
#pragma omp parallel for schedule(static)
        for (long i = 0; i < mb; i++) {
          c5_real *s = p + i * n1;
          c5_real mx = s[0];
          for (long j = 1; j < n1; j++)
            if ((!m || m[j - 1]) && s[j] > mx) mx = s[j];
          for (long j = 0; j < n1; j++) s[j] = (j == 0 || !m || m[j - 1]) ? s[j] - mx : 0;
          c5k_vexp(s, n1);
          if (m)
            for (long j = 1; j < n1; j++)
              if (!m[j - 1]) s[j] = 0;
          double sum = 0;
          for (long j = 0; j < n1; j++) sum += s[j];
          lrow[i] = (double)mx + log(sum);
          double inv = 1.0 / sum;
          for (long j = 0; j < n1; j++) s[j] = (c5_real)(s[j] * inv);
        }
        /* o_h = P v_h, heads merged */
        st = c5k_gemm_cpu(&rest, 0, 0, mb, dh, n1, 1.0, p, n1, kv + off + dh, L, 0.0,
                          o + (b * nq + i0) * D + (long)h * dh, D);
        if (st != C5_OK) return st;
      }
    }
  return C5_OK;
}

/* One head and one block of query rows at a time: P recomputed from S and
   lse, dP and then dS in the second block; dK and dV accumulate over the
   row blocks in dkv, where the to_kv GEMM wants them. */
c5_status c5k_heavy_attn_backward_cpu(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *q, const c5_real *kv,
                                      const uint8_t *kmask, const double *lse, const c5_real *o, const c5_real *dout,
                                      c5_real *dq, c5_real *dkv)
{
  (void)o;   /* Delta from P and dP, as the rows' blocks have them */
  const long batch = A->batch, nq = A->nq, nk = A->nk;
  const int H = A->heads, R = A->routes, hpr = H / R, dh = A->dim_head;
  const long D = (long)H * dh, L = 2L * hpr * dh, n1 = nk + 1;
  const double scale = 1.0 / sqrt((double)dh);
  c5_real *p, *ds;
  c5k_ctx rest;
  c5_status st = score_blocks(ctx, A, "heavy_attn_backward", &p, &ds, &rest);
  if (st != C5_OK) return st;
  if (nq == 0) {   /* no query weighs any slot */
    memset(dkv, 0, (size_t)(batch * R * n1 * L) * sizeof *dkv);
    return C5_OK;
  }

  /* per head and row block: dP = do_h v_h^T; dv_h += P^T do_h; dS = P (dP - rowsum(P dP));
     dq_h = dS k_h s; dk_h += dS^T q_h s */
  for (long b = 0; b < batch; b++)
    for (int h = 0; h < H; h++) {
      const long off = (b * R + h / hpr) * n1 * L + (long)(h % hpr) * 2 * dh;
      const uint8_t *m = kmask ? kmask + (b * R + h / hpr) * nk : NULL;
      for (long i0 = 0; i0 < nq; i0 += C5K_HEAVY_ROWS) {
        const long mb = nq - i0 < C5K_HEAVY_ROWS ? nq - i0 : C5K_HEAVY_ROWS;
        const c5_real *doh = dout + (b * nq + i0) * D + (long)h * dh, *qh = q + (b * nq + i0) * D + (long)h * dh;
        const double *lrow = lse + (b * H + h) * nq + i0;
        const double beta = i0 ? 1.0 : 0.0;   /* the first block sets dk_h, dv_h; the later ones add */
        st = c5k_gemm_cpu(&rest, 0, 1, mb, n1, dh, scale, qh, D, kv + off, L, 0.0, p, n1);
        if (st != C5_OK) return st;
#pragma omp parallel for schedule(static)
        for (long i = 0; i < mb; i++) {
          c5_real *s = p + i * n1;
          for (long j = 0; j < n1; j++) s[j] = (j == 0 || !m || m[j - 1]) ? (c5_real)((double)s[j] - lrow[i]) : 0;
          c5k_vexp(s, n1);
          if (m)
            for (long j = 1; j < n1; j++)
              if (!m[j - 1]) s[j] = 0;
        }
        st = c5k_gemm_cpu(&rest, 0, 1, mb, n1, dh, 1.0, doh, D, kv + off + dh, L, 0.0, ds, n1);
        if (st != C5_OK) return st;
        st = c5k_gemm_cpu(&rest, 1, 0, n1, dh, mb, 1.0, p, n1, doh, D, beta, dkv + off + dh, L);
        if (st != C5_OK) return st;
#pragma omp parallel for schedule(static)
        for (long i = 0; i < mb; i++) {
          const c5_real *pr = p + i * n1;
          c5_real *d = ds + i * n1;
          double dot = 0;
          for (long j = 0; j < n1; j++) dot += (double)pr[j] * d[j];
          for (long j = 0; j < n1; j++) d[j] = (c5_real)(pr[j] * (d[j] - dot));
        }
        st = c5k_gemm_cpu(&rest, 0, 0, mb, dh, n1, scale, ds, n1, kv + off, L, 0.0,
                          dq + (b * nq + i0) * D + (long)h * dh, D);
        if (st != C5_OK) return st;
        st = c5k_gemm_cpu(&rest, 1, 0, n1, dh, mb, scale, ds, n1, qh, D, beta, dkv + off, L);
        if (st != C5_OK) return st;
      }
    }
  return C5_OK;
}

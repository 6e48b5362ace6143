/* cli.h - command-line and JSON option parsing shared by the apps
   (colt5-golden, colt5-bench, colt5-train): values are taken whole and in
   range (no wrap, no overflow, no junk read as 0), and a wrong one is named
   with its option and value in one message. */
#ifndef C5_APPS_CLI_H
#define C5_APPS_CLI_H

#include <jansson.h>
#include "colt5.h"

/* One integer in [lo, hi] at s, ending at a ',' or the end: its end, or NULL
   (junk, empty, out of range, or past what a long holds). */
const char *cli_parse_int(const char *s, long lo, long hi, long *out);
/* A comma-separated list of integers in [lo, hi], at most max of them: its
   length, or -1. */
int cli_parse_list(const char *s, long lo, long hi, long *out, int max);
/* One finite number in [lo, hi], the whole of s: 0, or -1. */
int cli_parse_real(const char *s, double lo, double hi, double *out);
/* The first bad option's message (later ones are dropped: one message). */
c5_status cli_bad_option(c5_status st, const char *opt, const char *val, const char *want);

/* JSON options. The first value of the wrong type or range is remembered
   ("option 'KEY' is VALUE, expected WANT"; cli_json_error, "" when none), and
   the default is returned in its place, so that a caller reads every option
   and refuses the whole set by that one message. */
void cli_json_reset(void);
const char *cli_json_error(void);
void cli_json_wrong(const char *key, json_t *v, const char *want);
/* Absent or null (Python's None) gives dflt. */
double cli_json_num(json_t *o, const char *key, double dflt);
/* An integer (a count, a size): integral and below 2^31 in magnitude. */
long cli_json_int(json_t *o, const char *key, long dflt);
int cli_json_bool(json_t *o, const char *key, int dflt);
/* Keys of a JSON object must all be in allowed (NULL-terminated); what names the object. */
c5_status cli_check_keys(const char *file, const char *what, json_t *obj, const char *const *allowed);

#endif

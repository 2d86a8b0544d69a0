/* Check scripts: a definition's send/expect commands, compiled once, and the
 * pure matching and reporting the probes use. No I/O here, so unit tests and
 * fuzzers drive it directly. */
#ifndef HC_SCRIPT_H
#define HC_SCRIPT_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api_def.h"

struct hc_step {
    enum api_cmd_kind kind;
    const uint8_t *data; /* the message: the script's own copy, NUL-terminated */
    size_t len;
    bool has_re;
    regex_t re;
};

struct hc_script {
    struct hc_step *steps;
    size_t nsteps;
};

/* Compiles a check entry's commands into a script that owns copies of the
 * messages. Returns 0, or -1 with a reason. */
int hc_script_compile(const struct api_check *chk, struct hc_script *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void hc_script_free(struct hc_script *s);

/* Whether two scripts send and expect the same bytes, step by step. */
bool hc_script_equal(const struct hc_script *a, const struct hc_script *b);

enum hc_verdict {
    HC_WAIT, /* not decided: wait for more data */
    HC_PASS,
    HC_FAIL,
};

/* Judges an expect step on the data received since the previous step. `final`
 * says no more data will come for this step (the peer closed, or the step's
 * deadline passed). An expect passes as soon as its text appears anywhere in
 * the data; a negated one fails as soon as it appears, and passes when the
 * data is final, non-empty and free of it. */
enum hc_verdict hc_step_judge(const struct hc_step *st, const uint8_t *data, size_t len,
                              bool final);

/* Writes data as a C-like escaped string ("\r\n", "\x00") into out, at most
 * `max` input bytes, adding "..." when cut. Always terminates out. */
void hc_escape(const uint8_t *data, size_t len, size_t max, char *out, size_t outlen);

/* The name a step's kind has in a definition ("send", "expect", ...). */
const char *hc_step_name(enum api_cmd_kind kind);

#endif

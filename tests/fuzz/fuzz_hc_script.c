/* Fuzz target: health-check scripts (healthcheck/hc_script.h): compiling a
 * check's commands, judging expect steps on a peer's answer, and escaping
 * bytes for the failure message.
 *
 * Input layout, chosen so that mutations keep most of it meaningful:
 *   byte 0          number of commands, modulo 9
 *   per command     kind (modulo 5: send, expect, expect_not, expect_regex,
 *                   expect_not_regex), length (one byte), then the message
 *   the rest        the answer the peer sent
 *
 * Scripts only ever come from definitions the loader accepted, so a pattern
 * api_regex_check rejects (one regcomp would take gigabytes for) is skipped,
 * as the loader would have refused it.
 *
 * Every expect step is judged on the answer and on prefixes of it, as it would
 * be while the answer arrives. A final verdict never waits; a verdict reached
 * before the end stands when the data turns out to be final; and a literal
 * expect agrees with a plain substring search. */
#include <stdbool.h>

#include "fuzz_util.h"
#include "api_regex.h"
#include "hc_script.h"

#define HC_MAX_CMDS 8

static bool hc_contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    if (m == 0)
        return true;
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

static bool hc_is_regex(enum api_cmd_kind k)
{
    return k == API_CMD_EXPECT_REGEX || k == API_CMD_EXPECT_NOT_REGEX;
}

static bool hc_is_negated(enum api_cmd_kind k)
{
    return k == API_CMD_EXPECT_NOT || k == API_CMD_EXPECT_NOT_REGEX;
}

/* Judges one step on data[0..len), held in an exact-size copy for a literal
 * step. A regex step gets a NUL after the data: regexec reads only up to
 * rm_eo with REG_STARTEND, but the sanitizer's regexec interceptor measures
 * the string with strlen and would report a read past an exact copy. */
static enum hc_verdict hc_judge(const struct hc_step *st, const uint8_t *data, size_t len,
                                bool final)
{
    uint8_t *buf = st->has_re ? (uint8_t *)fuzz_cstr(data, len) : fuzz_copy(data, len);
    enum hc_verdict v = hc_step_judge(st, buf, len, final);
    free(buf);
    FUZZ_CHECK(v == HC_WAIT || v == HC_PASS || v == HC_FAIL);
    return v;
}

static void hc_check_step(const struct hc_step *st, const uint8_t *ans, size_t n)
{
    size_t cuts[64];
    size_t ncuts = fuzz_prefixes(n, 0, cuts);
    cuts[ncuts++] = n; /* the whole answer too */
    for (size_t i = 0; i < ncuts; i++) {
        size_t k = cuts[i];
        enum hc_verdict early = hc_judge(st, ans, k, false);
        enum hc_verdict final = hc_judge(st, ans, k, true);
        FUZZ_CHECK(final != HC_WAIT);
        if (early != HC_WAIT)
            FUZZ_CHECK(early == final);
        if (hc_is_regex(st->kind))
            continue; /* "$" and "^" make a regex's answer depend on where data ends */
        bool hit = hc_contains(ans, k, st->data, st->len);
        if (!hc_is_negated(st->kind))
            FUZZ_CHECK(final == (hit ? HC_PASS : HC_FAIL));
        else
            FUZZ_CHECK(final == (hit || k == 0 ? HC_FAIL : HC_PASS));
    }
}

/* hc_escape into buffers of every awkward size: always terminated, never
 * longer than the buffer, and a prefix of the full escaping (plus "..."). */
static void hc_check_escape(const uint8_t *data, size_t n)
{
    if (n > 256)
        n = 256;
    char full[256 * 4 + 8];
    hc_escape(data, n, n, full, sizeof(full));
    FUZZ_CHECK(fuzz_terminated(full, sizeof(full)));
    size_t flen = strlen(full);
    static const size_t outlens[] = {1, 2, 3, 4, 5, 6, 8, 13, 64, sizeof(full)};
    static const size_t maxes[] = {0, 1, 3, 40};
    for (size_t i = 0; i < sizeof(outlens) / sizeof(outlens[0]); i++) {
        for (size_t j = 0; j <= sizeof(maxes) / sizeof(maxes[0]); j++) {
            size_t max = j < sizeof(maxes) / sizeof(maxes[0]) ? maxes[j] : n;
            char out[sizeof(full)];
            memset(out, 'x', sizeof(out));
            hc_escape(data, n, max, out, outlens[i]);
            FUZZ_CHECK(fuzz_terminated(out, outlens[i]));
            size_t olen = strlen(out);
            bool prefix = olen <= flen && memcmp(out, full, olen) == 0;
            bool cut = olen >= 3 && olen - 3 <= flen && memcmp(out + olen - 3, "...", 3) == 0 &&
                       memcmp(out, full, olen - 3) == 0;
            FUZZ_CHECK(prefix || cut);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t pos = 1;
    struct api_check_cmd cmds[HC_MAX_CMDS];
    struct api_check chk = {.commands = cmds, .ncommands = 0};
    size_t want = data[0] % (HC_MAX_CMDS + 1);
    while (chk.ncommands < want && pos + 2 <= size) {
        struct api_check_cmd *c = &cmds[chk.ncommands++];
        c->kind = (enum api_cmd_kind)(data[pos] % 5);
        size_t len = data[pos + 1];
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        /* As the definition parser leaves it: NUL-terminated, NULs kept. */
        c->message = fuzz_cstr(data + pos, len);
        c->len = len;
        pos += len;
    }
    const uint8_t *ans = data + pos;
    size_t nans = size - pos;
    bool loadable = true;
    for (size_t i = 0; i < chk.ncommands && loadable; i++) {
        char why[128];
        if (hc_is_regex(cmds[i].kind) && strlen(cmds[i].message) == cmds[i].len)
            loadable = api_regex_check(cmds[i].message, why, sizeof(why)) == 0;
    }
    if (!loadable) {
        for (size_t i = 0; i < chk.ncommands; i++)
            free(cmds[i].message);
        return 0;
    }

    struct hc_script script;
    char err[256];
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    if (hc_script_compile(&chk, &script, err, sizeof(err)) == 0) {
        FUZZ_CHECK(script.nsteps == chk.ncommands);
        for (size_t i = 0; i < script.nsteps; i++) {
            const struct hc_step *st = &script.steps[i];
            FUZZ_CHECK(st->kind == cmds[i].kind && st->len == cmds[i].len);
            FUZZ_CHECK(st->has_re == hc_is_regex(st->kind));
            FUZZ_CHECK(strcmp(hc_step_name(st->kind), "?") != 0);
            if (st->kind != API_CMD_SEND)
                hc_check_step(st, ans, nans);
        }
        hc_script_free(&script);
    } else {
        FUZZ_CHECK(fuzz_terminated(err, sizeof(err)) && err[0] != '\0' && err[0] != 'x');
        FUZZ_CHECK(script.steps == NULL && script.nsteps == 0);
        bool has_regex = false;
        for (size_t i = 0; i < chk.ncommands; i++)
            has_regex = has_regex || hc_is_regex(cmds[i].kind);
        FUZZ_CHECK(has_regex); /* only a pattern can fail to compile */
    }
    hc_check_escape(data, size);
    for (size_t i = 0; i < chk.ncommands; i++)
        free(cmds[i].message);
    return 0;
}

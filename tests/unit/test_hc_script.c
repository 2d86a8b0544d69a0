/* Unit tests for healthcheck/hc_script.c: compiling a check's commands, the
 * verdicts of every expect kind (hc_step_judge) and the escaping that failure
 * messages use (hc_escape). All pure: no sockets, no event loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "hc_script.h"

/* ---- helpers ------------------------------------------------------------------- */

#define MAX_CMDS 8

/* A check entry built in place; the messages are borrowed by the script. */
struct fixture {
    struct api_check chk;
    struct api_check_cmd cmds[MAX_CMDS];
    struct hc_script script;
};

static void fx_add(struct fixture *f, enum api_cmd_kind kind, const void *msg, size_t len)
{
    assert_true(f->chk.ncommands < MAX_CMDS);
    struct api_check_cmd *c = &f->cmds[f->chk.ncommands++];
    c->kind = kind;
    c->message = (char *)msg; /* the compiler only reads it */
    c->len = len;
    f->chk.commands = f->cmds;
}

#define FX_ADD_STR(f, kind, s) fx_add((f), (kind), (s), sizeof(s) - 1)

/* Compiles one command and returns its step; the fixture owns the script. */
static const struct hc_step *one_step(struct fixture *f, enum api_cmd_kind kind, const void *msg,
                                      size_t len)
{
    memset(f, 0, sizeof(*f));
    fx_add(f, kind, msg, len);
    char err[256] = "";
    assert_int_equal(hc_script_compile(&f->chk, &f->script, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(f->script.nsteps, 1);
    return &f->script.steps[0];
}

#define ONE_STEP(f, kind, s) one_step((f), (kind), (s), sizeof(s) - 1)

static enum hc_verdict judge_str(const struct hc_step *st, const char *data, bool final)
{
    return hc_step_judge(st, (const uint8_t *)data, strlen(data), final);
}

#define JUDGE_BYTES(st, lit, final)                                                                \
    hc_step_judge((st), (const uint8_t *)(lit), sizeof(lit) - 1, (final))

/* ---- compile --------------------------------------------------------------------- */

static void test_compile_all_kinds(void **state)
{
    (void)state;
    struct fixture f;
    memset(&f, 0, sizeof(f));
    FX_ADD_STR(&f, API_CMD_SEND, "PING\r\n");
    FX_ADD_STR(&f, API_CMD_EXPECT, "+PONG");
    FX_ADD_STR(&f, API_CMD_EXPECT_NOT, "-ERR");
    FX_ADD_STR(&f, API_CMD_EXPECT_REGEX, "^\\+PONG\r?$");
    FX_ADD_STR(&f, API_CMD_EXPECT_NOT_REGEX, "role:(slave|replica)");
    char err[256] = "";
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, sizeof(err)), 0);
    assert_int_equal(f.script.nsteps, 5);
    static const enum api_cmd_kind kinds[] = {API_CMD_SEND, API_CMD_EXPECT, API_CMD_EXPECT_NOT,
                                              API_CMD_EXPECT_REGEX, API_CMD_EXPECT_NOT_REGEX};
    static const bool re[] = {false, false, false, true, true};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(f.script.steps[i].kind, kinds[i]);
        assert_int_equal(f.script.steps[i].has_re, re[i]);
        /* The script owns copies of the messages: it may outlive the definition. */
        assert_ptr_not_equal(f.script.steps[i].data, f.cmds[i].message);
        assert_int_equal(f.script.steps[i].len, f.cmds[i].len);
        assert_memory_equal(f.script.steps[i].data, f.cmds[i].message, f.cmds[i].len);
    }
    hc_script_free(&f.script);
    assert_null(f.script.steps);
    assert_int_equal(f.script.nsteps, 0);
    hc_script_free(&f.script); /* twice is harmless */
    hc_script_free(NULL);
}

static void test_compile_no_commands(void **state)
{
    (void)state;
    struct fixture f;
    memset(&f, 0, sizeof(f));
    char err[64] = "";
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, sizeof(err)), 0);
    assert_int_equal(f.script.nsteps, 0);
    hc_script_free(&f.script);
}

static void test_compile_bad_regex(void **state)
{
    (void)state;
    struct fixture f;
    memset(&f, 0, sizeof(f));
    FX_ADD_STR(&f, API_CMD_SEND, "INFO\r\n");
    FX_ADD_STR(&f, API_CMD_EXPECT_REGEX, "role:(master");
    char err[256] = "";
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, sizeof(err)), -1);
    /* Names the command (1-based) and says why, in regerror's words. */
    assert_non_null(strstr(err, "command 2: invalid regular expression: "));
    assert_true(strlen(err) > strlen("command 2: invalid regular expression: "));
    /* Nothing is left behind to free. */
    assert_null(f.script.steps);
    assert_int_equal(f.script.nsteps, 0);

    /* A negated regex is compiled too. */
    memset(&f, 0, sizeof(f));
    FX_ADD_STR(&f, API_CMD_EXPECT_NOT_REGEX, "a{2,1}");
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "command 1: invalid regular expression: "));
}

static void test_compile_bad_regex_after_good_ones(void **state)
{
    (void)state;
    /* Earlier regexes are freed when a later one fails (ASan's leak check). */
    struct fixture f;
    memset(&f, 0, sizeof(f));
    FX_ADD_STR(&f, API_CMD_EXPECT_REGEX, "ok[0-9]+");
    FX_ADD_STR(&f, API_CMD_EXPECT_NOT_REGEX, "err(or)?");
    FX_ADD_STR(&f, API_CMD_EXPECT_REGEX, "[z-a]");
    char err[256] = "";
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "command 3: invalid regular expression"));
    assert_null(f.script.steps);
}

static void test_compile_nul_in_regex(void **state)
{
    (void)state;
    static const char pat[] = "role:\0master"; /* a JSON "\u0000" decodes to this */
    struct fixture f;
    memset(&f, 0, sizeof(f));
    FX_ADD_STR(&f, API_CMD_SEND, "x");
    fx_add(&f, API_CMD_EXPECT_REGEX, pat, sizeof(pat) - 1);
    char err[256] = "";
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, sizeof(err)), -1);
    assert_string_equal(err, "command 2: invalid regular expression: NUL in the pattern");
    assert_null(f.script.steps);

    memset(&f, 0, sizeof(f));
    fx_add(&f, API_CMD_EXPECT_NOT_REGEX, pat, sizeof(pat) - 1);
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, sizeof(err)), -1);
    assert_string_equal(err, "command 1: invalid regular expression: NUL in the pattern");
}

static void test_compile_nul_in_plain_expect_is_fine(void **state)
{
    (void)state;
    /* Plain expects are bytes: a NUL is just one of them. */
    static const char msg[] = "\0\x01OK";
    struct fixture f;
    const struct hc_step *st = one_step(&f, API_CMD_EXPECT, msg, sizeof(msg) - 1);
    assert_false(st->has_re);
    assert_int_equal(JUDGE_BYTES(st, "junk\0\x01OK\r\n", false), HC_PASS);
    assert_int_equal(JUDGE_BYTES(st, "junk\0\x02OK\r\n", true), HC_FAIL);
    assert_int_equal(JUDGE_BYTES(st, "OK", true), HC_FAIL); /* not without the prefix */
    hc_script_free(&f.script);
}

static void test_compile_error_small_buffer(void **state)
{
    (void)state;
    struct fixture f;
    memset(&f, 0, sizeof(f));
    FX_ADD_STR(&f, API_CMD_EXPECT_REGEX, "(");
    char err[12];
    memset(err, 'Z', sizeof(err));
    assert_int_equal(hc_script_compile(&f.chk, &f.script, err, 8), -1);
    assert_int_equal(strlen(err), 7); /* cut, terminated */
    assert_int_equal(err[8], 'Z');    /* and nothing written past it */
}

static void test_step_names(void **state)
{
    (void)state;
    assert_string_equal(hc_step_name(API_CMD_SEND), "send");
    assert_string_equal(hc_step_name(API_CMD_EXPECT), "expect");
    assert_string_equal(hc_step_name(API_CMD_EXPECT_NOT), "expect_not");
    assert_string_equal(hc_step_name(API_CMD_EXPECT_REGEX), "expect_regex");
    assert_string_equal(hc_step_name(API_CMD_EXPECT_NOT_REGEX), "expect_not_regex");
    assert_string_equal(hc_step_name((enum api_cmd_kind)99), "?");
}

/* ---- expect ---------------------------------------------------------------------- */

static void test_expect_found_anywhere(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT, "+PONG");
    for (int final = 0; final < 2; final++) {
        assert_int_equal(judge_str(st, "+PONG", final), HC_PASS);             /* all of it */
        assert_int_equal(judge_str(st, "+PONG\r\n", final), HC_PASS);         /* at the start */
        assert_int_equal(judge_str(st, "hello +PONG there", final), HC_PASS); /* middle */
        assert_int_equal(judge_str(st, "banner\r\n+PONG", final), HC_PASS);   /* at the end */
    }
    hc_script_free(&f.script);
}

static void test_expect_wait_then_fail_on_final(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT, "+PONG");
    /* Nothing yet, or not yet enough: wait unless nothing more will come. */
    assert_int_equal(hc_step_judge(st, NULL, 0, false), HC_WAIT);
    assert_int_equal(hc_step_judge(st, NULL, 0, true), HC_FAIL);
    assert_int_equal(judge_str(st, "+PO", false), HC_WAIT);
    assert_int_equal(judge_str(st, "+PO", true), HC_FAIL);
    assert_int_equal(judge_str(st, "-ERR unknown command\r\n", false), HC_WAIT);
    assert_int_equal(judge_str(st, "-ERR unknown command\r\n", true), HC_FAIL);
    /* Case matters. */
    assert_int_equal(judge_str(st, "+pong\r\n", true), HC_FAIL);
    hc_script_free(&f.script);
}

static void test_expect_split_arrival(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT, "role:master");
    /* The engine judges everything received since the previous step, each time
     * more arrives: a prefix of the answer waits, the whole of it passes. */
    static const char answer[] = "$95\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";
    size_t at = strstr(answer, "role:master") - answer + strlen("role:master");
    for (size_t n = 0; n < sizeof(answer) - 1; n++) {
        enum hc_verdict v = hc_step_judge(st, (const uint8_t *)answer, n, false);
        assert_int_equal(v, n < at ? HC_WAIT : HC_PASS);
    }
    /* One byte at a time is the same as all at once. */
    assert_int_equal(hc_step_judge(st, (const uint8_t *)answer, at - 1, false), HC_WAIT);
    assert_int_equal(hc_step_judge(st, (const uint8_t *)answer, at, false), HC_PASS);
    hc_script_free(&f.script);
}

static void test_expect_binary_data(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT, "OK");
    /* NULs before the text do not hide it. */
    assert_int_equal(JUDGE_BYTES(st, "\0\0\0\xff\r\nOK", false), HC_PASS);
    assert_int_equal(JUDGE_BYTES(st, "\0\0\0\xff\r\nO\0K", true), HC_FAIL);
    /* Only len bytes are looked at. */
    assert_int_equal(hc_step_judge(st, (const uint8_t *)"xxOK", 3, true), HC_FAIL);
    hc_script_free(&f.script);
}

static void test_expect_empty_passes(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = one_step(&f, API_CMD_EXPECT, "", 0);
    /* An empty expect checks nothing (the loader warns): it passes at once,
     * even before any data. */
    assert_int_equal(hc_step_judge(st, NULL, 0, false), HC_PASS);
    assert_int_equal(hc_step_judge(st, NULL, 0, true), HC_PASS);
    assert_int_equal(judge_str(st, "anything", false), HC_PASS);
    hc_script_free(&f.script);

    /* Its negation can never pass: the empty text is in everything. */
    st = one_step(&f, API_CMD_EXPECT_NOT, "", 0);
    assert_int_equal(hc_step_judge(st, NULL, 0, false), HC_FAIL);
    assert_int_equal(judge_str(st, "anything", true), HC_FAIL);
    hc_script_free(&f.script);
}

/* ---- expect_not ------------------------------------------------------------------ */

static void test_expect_not(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT_NOT, "role:slave");
    /* Found: fails at once, without waiting for the step to end. */
    assert_int_equal(judge_str(st, "role:slave", false), HC_FAIL);
    assert_int_equal(judge_str(st, "# Replication\r\nrole:slave\r\n", false), HC_FAIL);
    assert_int_equal(judge_str(st, "xx role:slave", true), HC_FAIL);
    /* Not found yet: it might still come. */
    assert_int_equal(judge_str(st, "# Replication\r\nrole:master\r\n", false), HC_WAIT);
    assert_int_equal(judge_str(st, "role:sla", false), HC_WAIT);
    assert_int_equal(hc_step_judge(st, NULL, 0, false), HC_WAIT);
    /* Not found and nothing more will come: passes, if there was an answer. */
    assert_int_equal(judge_str(st, "# Replication\r\nrole:master\r\n", true), HC_PASS);
    assert_int_equal(judge_str(st, "role:sla", true), HC_PASS);
    /* A silent peer proves nothing. */
    assert_int_equal(hc_step_judge(st, NULL, 0, true), HC_FAIL);
    assert_int_equal(hc_step_judge(st, (const uint8_t *)"x", 0, true), HC_FAIL);
    hc_script_free(&f.script);
}

static void test_expect_not_split_arrival(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT_NOT, "-ERR");
    static const char answer[] = "+OK\r\n-ERR busy\r\n";
    for (size_t n = 1; n < sizeof(answer) - 1; n++) {
        enum hc_verdict v = hc_step_judge(st, (const uint8_t *)answer, n, false);
        assert_int_equal(v, n < 9 ? HC_WAIT : HC_FAIL);
    }
    hc_script_free(&f.script);
}

/* ---- regex ----------------------------------------------------------------------- */

static void test_expect_regex(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT_REGEX, "role:(master|primary)");
    for (int final = 0; final < 2; final++) {
        assert_int_equal(judge_str(st, "role:master", final), HC_PASS);
        assert_int_equal(judge_str(st, "# Replication\r\nrole:primary\r\nx", final), HC_PASS);
        assert_int_equal(judge_str(st, "tail role:master", final), HC_PASS);
    }
    assert_int_equal(judge_str(st, "role:slave\r\n", false), HC_WAIT);
    assert_int_equal(judge_str(st, "role:slave\r\n", true), HC_FAIL);
    assert_int_equal(hc_step_judge(st, NULL, 0, false), HC_WAIT);
    assert_int_equal(hc_step_judge(st, NULL, 0, true), HC_FAIL);
    /* Split: "role:mas" waits, the rest completes it. */
    assert_int_equal(judge_str(st, "role:mas", false), HC_WAIT);
    assert_int_equal(judge_str(st, "role:master", false), HC_PASS);
    hc_script_free(&f.script);

    /* Anchors: without REG_NEWLINE, ^ and $ are the ends of the data. */
    st = ONE_STEP(&f, API_CMD_EXPECT_REGEX, "^\\+PONG\r\n$");
    assert_int_equal(judge_str(st, "+PONG\r\n", true), HC_PASS);
    assert_int_equal(judge_str(st, "x+PONG\r\n", true), HC_FAIL);
    assert_int_equal(judge_str(st, "+PONG\r\nmore", true), HC_FAIL);
    hc_script_free(&f.script);
}

static void test_regex_over_nul_and_crlf(void **state)
{
    (void)state;
    struct fixture f;
    /* REG_STARTEND: the match runs over all len bytes, past NULs. */
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT_REGEX, "role:m[a-z]+\r\n");
    assert_int_equal(JUDGE_BYTES(st, "\0\0\0\x01\r\nrole:master\r\n", false), HC_PASS);
    assert_int_equal(JUDGE_BYTES(st, "a\0b\r\nc\0role:master\r\nd\0", false), HC_PASS);
    assert_int_equal(JUDGE_BYTES(st, "\0role:master\n", true), HC_FAIL); /* no \r */
    hc_script_free(&f.script);

    /* A NUL in the data is a character a bracket expression matches (glibc's
     * POSIX syntax keeps "." from matching NUL, RE_DOT_NOT_NULL). */
    st = ONE_STEP(&f, API_CMD_EXPECT_REGEX, "^A[^Z]B$");
    assert_int_equal(JUDGE_BYTES(st, "A\0B", true), HC_PASS);
    hc_script_free(&f.script);

    /* And the match stops at len: bytes after it are not data. */
    st = ONE_STEP(&f, API_CMD_EXPECT_REGEX, "OK$");
    assert_int_equal(hc_step_judge(st, (const uint8_t *)"xxOKyy", 4, true), HC_PASS);
    assert_int_equal(hc_step_judge(st, (const uint8_t *)"xxOK", 3, true), HC_FAIL);
    hc_script_free(&f.script);

    st = ONE_STEP(&f, API_CMD_EXPECT_REGEX, "OK");
    assert_int_equal(hc_step_judge(st, (const uint8_t *)"\0\0OK", 3, false), HC_WAIT);
    assert_int_equal(hc_step_judge(st, (const uint8_t *)"\0\0OK", 4, false), HC_PASS);
    hc_script_free(&f.script);
}

static void test_regex_empty_data(void **state)
{
    (void)state;
    struct fixture f;
    /* A pattern that matches the empty string still needs an answer. */
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT_REGEX, "x*");
    assert_int_equal(hc_step_judge(st, NULL, 0, false), HC_WAIT);
    assert_int_equal(hc_step_judge(st, NULL, 0, true), HC_FAIL);
    assert_int_equal(judge_str(st, "y", false), HC_PASS);
    hc_script_free(&f.script);
}

static void test_expect_not_regex(void **state)
{
    (void)state;
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT_NOT_REGEX, "^-(ERR|LOADING)");
    assert_int_equal(judge_str(st, "-LOADING Redis is loading\r\n", false), HC_FAIL);
    assert_int_equal(judge_str(st, "-ERR x", true), HC_FAIL);
    assert_int_equal(judge_str(st, "+PONG\r\n", false), HC_WAIT);
    assert_int_equal(judge_str(st, "+PONG\r\n", true), HC_PASS);
    assert_int_equal(judge_str(st, "+OK -ERR", true), HC_PASS); /* ^ anchors at the start */
    assert_int_equal(hc_step_judge(st, NULL, 0, true), HC_FAIL);
    assert_int_equal(hc_step_judge(st, NULL, 0, false), HC_WAIT);
    /* Found after NULs and line ends (REG_STARTEND). */
    hc_script_free(&f.script);
    st = ONE_STEP(&f, API_CMD_EXPECT_NOT_REGEX, "down|fail(ed)?");
    assert_int_equal(JUDGE_BYTES(st, "\0\r\n\0status: failed\r\n", false), HC_FAIL);
    assert_int_equal(JUDGE_BYTES(st, "\0\r\n\0status: ok\r\n", true), HC_PASS);
    hc_script_free(&f.script);
}

/* ---- the Redis INFO reply ---------------------------------------------------------- */

/* What Tyk's TCP uptime checker does with an expect: read len(message) bytes
 * and compare them with the message. */
static bool tyk_style_expect(const char *message, const char *answer)
{
    size_t n = strlen(message);
    return strlen(answer) >= n && memcmp(answer, message, n) == 0;
}

static void test_redis_info_replication(void **state)
{
    (void)state;
    /* "INFO replication" answers with a bulk string: a length line first. */
    static const char master[] = "$312\r\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
                                 "slave0:ip=10.0.0.2,port=6379,state=online,offset=42,lag=0\r\n";
    static const char replica[] = "$312\r\n# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\n";
    struct fixture f;
    const struct hc_step *st = ONE_STEP(&f, API_CMD_EXPECT, "role:master");
    assert_int_equal(judge_str(st, master, false), HC_PASS);
    assert_int_equal(judge_str(st, replica, false), HC_WAIT);
    assert_int_equal(judge_str(st, replica, true), HC_FAIL);
    /* Tyk's exact-prefix comparison would have failed the master too: the
     * answer starts with "$312\r\n# Rep", not with "role:master". Finding the
     * text anywhere is what makes this check usable. */
    assert_false(tyk_style_expect("role:master", master));
    assert_false(tyk_style_expect("role:master", replica));
    assert_true(tyk_style_expect("$312", master)); /* only a prefix would do */
    hc_script_free(&f.script);

    st = ONE_STEP(&f, API_CMD_EXPECT_NOT, "role:slave");
    assert_int_equal(judge_str(st, master, true), HC_PASS);
    assert_int_equal(judge_str(st, replica, false), HC_FAIL);
    hc_script_free(&f.script);
}

/* ---- hc_escape ------------------------------------------------------------------- */

static void escape_str(const char *in, size_t len, size_t max, char *out, size_t outlen)
{
    hc_escape((const uint8_t *)in, len, max, out, outlen);
}

static void test_escape_specials(void **state)
{
    (void)state;
    char out[256];
    static const char in[] = "a\r\nb\tc\"d\\e";
    escape_str(in, sizeof(in) - 1, 100, out, sizeof(out));
    assert_string_equal(out, "a\\r\\nb\\tc\\\"d\\\\e");

    static const char bin[] = "\0\x01\x1f \x7f\x80\xff~";
    escape_str(bin, sizeof(bin) - 1, 100, out, sizeof(out));
    assert_string_equal(out, "\\x00\\x01\\x1f \\x7f\\x80\\xff~");

    escape_str("", 0, 100, out, sizeof(out));
    assert_string_equal(out, "");

    static const char redis[] = "$312\r\n# Replication\r\nrole:slave\r\n";
    escape_str(redis, sizeof(redis) - 1, 100, out, sizeof(out));
    assert_string_equal(out, "$312\\r\\n# Replication\\r\\nrole:slave\\r\\n");
}

static void test_escape_truncates_at_max(void **state)
{
    (void)state;
    char out[256];
    escape_str("abcdefgh", 8, 4, out, sizeof(out));
    assert_string_equal(out, "abcd...");
    escape_str("abcd", 4, 4, out, sizeof(out)); /* exactly max: not cut */
    assert_string_equal(out, "abcd");
    escape_str("abc", 3, 4, out, sizeof(out));
    assert_string_equal(out, "abc");
    escape_str("\r\n\r\n\r\n", 6, 2, out, sizeof(out));
    assert_string_equal(out, "\\r\\n...");
    /* The engine shows 48 bytes of an answer. */
    static const char redis[] = "$312\r\n# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\n";
    escape_str(redis, sizeof(redis) - 1, 48, out, sizeof(out));
    assert_string_equal(out, "$312\\r\\n# Replication\\r\\nrole:slave\\r\\nmaster_host:10....");
}

/* Every output fits, is terminated, writes nothing past outlen, and is the
 * escape of a prefix of the input (never cut inside an escape such as \x0),
 * maybe followed by "...". */
static void check_bounded(const uint8_t *in, size_t len, size_t max)
{
    char full[1100];
    size_t shown = len < max ? len : max;
    hc_escape(in, len, len, full, sizeof(full));
    assert_true(strlen(full) < sizeof(full) - 8);
    /* bound[k]: the length of the escape of the first k bytes. */
    size_t bound[300];
    assert_true(shown < 300);
    bound[0] = 0;
    for (size_t k = 0; k < shown; k++) {
        char one[8];
        hc_escape(in + k, 1, 1, one, sizeof(one));
        bound[k + 1] = bound[k] + strlen(one);
    }
    for (size_t outlen = 1; outlen <= 64; outlen++) {
        char buf[80];
        memset(buf, 'Z', sizeof(buf));
        hc_escape(in, len, max, buf, outlen);
        for (size_t k = outlen; k < sizeof(buf); k++)
            assert_int_equal(buf[k], 'Z');
        size_t n = strnlen(buf, outlen);
        assert_true(n < outlen); /* terminated within outlen */
        size_t body = n;
        if (n >= 3 && memcmp(buf + n - 3, "...", 3) == 0)
            body = n - 3;
        bool at_boundary = false;
        for (size_t k = 0; k <= shown && !at_boundary; k++)
            at_boundary = bound[k] == body;
        if (!at_boundary || strncmp(full, buf, body) != 0)
            fail_msg("outlen %zu: \"%s\" is not an escaped prefix of \"%s\"", outlen, buf, full);
    }
}

static void test_escape_tiny_buffers(void **state)
{
    (void)state;
    char buf[8];
    static const size_t sizes[] = {1, 2, 5};
    for (size_t i = 0; i < 3; i++) {
        memset(buf, 'Z', sizeof(buf));
        escape_str("hello, world", 12, 100, buf, sizes[i]);
        assert_true(strnlen(buf, sizes[i]) < sizes[i]);
        for (size_t k = sizes[i]; k < sizeof(buf); k++)
            assert_int_equal(buf[k], 'Z');
        size_t n = strlen(buf); /* anything shown of a cut text says so */
        assert_true(n == 0 || (n >= 3 && memcmp(buf + n - 3, "...", 3) == 0));
        memset(buf, 'Z', sizeof(buf));
        escape_str("\xff\xfe", 2, 100, buf, sizes[i]);
        assert_true(strnlen(buf, sizes[i]) < sizes[i]);
        for (size_t k = sizes[i]; k < sizeof(buf); k++)
            assert_int_equal(buf[k], 'Z');
    }
    /* A size of 1 holds only the terminator. */
    memset(buf, 'Z', sizeof(buf));
    escape_str("a", 1, 1, buf, 1);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'Z');
    /* A size of 0 writes nothing at all. */
    memset(buf, 'Z', sizeof(buf));
    escape_str("a", 1, 1, buf, 0);
    assert_int_equal(buf[0], 'Z');
}

static void test_escape_never_overflows(void **state)
{
    (void)state;
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    check_bounded(all, sizeof(all), sizeof(all));
    check_bounded(all, sizeof(all), 10);
    check_bounded((const uint8_t *)"abcdefghijklmnopqrstuvwxyz", 26, 26);
    check_bounded((const uint8_t *)"abcdefghijklmnopqrstuvwxyz", 26, 5);
    check_bounded((const uint8_t *)"\r\n\"\\\t\r\n\"\\\t\r\n\"\\\t", 15, 15);
    check_bounded((const uint8_t *)"a\\\\\\\\\\\\\\\\\\\\b", 12, 12);
}

static void test_escape_marks_cut_by_out_buffer(void **state)
{
    (void)state;
    /* When the out buffer, not max, cuts the text, the reader must still see
     * that it was cut: a failure message showing "\x01\x01\x01" for an expect
     * of 40 such bytes would claim that was the whole message. The engine's
     * own buffer for the expected text (96 bytes for 40 input bytes, up to 160
     * escaped) is cut this way by any binary expect of more than ~23 bytes. */
    uint8_t bin[40];
    memset(bin, 0x01, sizeof(bin));
    char out[96];
    hc_escape(bin, sizeof(bin), 40, out, sizeof(out));
    size_t n = strlen(out);
    assert_true(n < sizeof(out));
    assert_true(n >= 3);
    if (memcmp(out + n - 3, "...", 3) != 0)
        fail_msg("cut by the out buffer without \"...\": \"%s\" (%zu bytes)", out, n);

    char small[16];
    hc_escape((const uint8_t *)"abcdefghijklmnopqrstuvwxyz", 26, 100, small, sizeof(small));
    n = strlen(small);
    assert_true(n < sizeof(small));
    if (n < 3 || memcmp(small + n - 3, "...", 3) != 0)
        fail_msg("cut by the out buffer without \"...\": \"%s\"", small);
    assert_int_equal(strncmp(small, "abcdefghijklmnopqrstuvwxyz", n - 3), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_all_kinds),
        cmocka_unit_test(test_compile_no_commands),
        cmocka_unit_test(test_compile_bad_regex),
        cmocka_unit_test(test_compile_bad_regex_after_good_ones),
        cmocka_unit_test(test_compile_nul_in_regex),
        cmocka_unit_test(test_compile_nul_in_plain_expect_is_fine),
        cmocka_unit_test(test_compile_error_small_buffer),
        cmocka_unit_test(test_step_names),
        cmocka_unit_test(test_expect_found_anywhere),
        cmocka_unit_test(test_expect_wait_then_fail_on_final),
        cmocka_unit_test(test_expect_split_arrival),
        cmocka_unit_test(test_expect_binary_data),
        cmocka_unit_test(test_expect_empty_passes),
        cmocka_unit_test(test_expect_not),
        cmocka_unit_test(test_expect_not_split_arrival),
        cmocka_unit_test(test_expect_regex),
        cmocka_unit_test(test_regex_over_nul_and_crlf),
        cmocka_unit_test(test_regex_empty_data),
        cmocka_unit_test(test_expect_not_regex),
        cmocka_unit_test(test_redis_info_replication),
        cmocka_unit_test(test_escape_specials),
        cmocka_unit_test(test_escape_truncates_at_max),
        cmocka_unit_test(test_escape_tiny_buffers),
        cmocka_unit_test(test_escape_never_overflows),
        cmocka_unit_test(test_escape_marks_cut_by_out_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

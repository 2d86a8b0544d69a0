#define _GNU_SOURCE /* memmem */
#include "hc_script.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *hc_step_name(enum api_cmd_kind kind)
{
    switch (kind) {
    case API_CMD_SEND:
        return "send";
    case API_CMD_EXPECT:
        return "expect";
    case API_CMD_EXPECT_NOT:
        return "expect_not";
    case API_CMD_EXPECT_REGEX:
        return "expect_regex";
    case API_CMD_EXPECT_NOT_REGEX:
        return "expect_not_regex";
    }
    return "?";
}

static bool is_regex(enum api_cmd_kind k)
{
    return k == API_CMD_EXPECT_REGEX || k == API_CMD_EXPECT_NOT_REGEX;
}

int hc_script_compile(const struct api_check *chk, struct hc_script *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->steps = calloc(chk->ncommands ? chk->ncommands : 1, sizeof(*out->steps));
    if (out->steps == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < chk->ncommands; i++) {
        const struct api_check_cmd *c = &chk->commands[i];
        struct hc_step *st = &out->steps[out->nsteps++];
        st->kind = c->kind;
        /* A copy: a target outlives the definition it was built from when a
         * reload keeps it. */
        uint8_t *copy = malloc(c->len + 1);
        if (copy == NULL) {
            snprintf(err, errlen, "out of memory");
            hc_script_free(out);
            return -1;
        }
        memcpy(copy, c->message, c->len);
        copy[c->len] = '\0';
        st->data = copy;
        st->len = c->len;
        if (is_regex(c->kind)) {
            int rc = strlen(c->message) != c->len
                         ? REG_BADPAT
                         : regcomp(&st->re, c->message, REG_EXTENDED | REG_NOSUB);
            if (rc != 0) {
                char why[128] = "NUL in the pattern";
                if (strlen(c->message) == c->len)
                    regerror(rc, NULL, why, sizeof(why));
                snprintf(err, errlen, "command %zu: invalid regular expression: %s", i + 1, why);
                hc_script_free(out);
                return -1;
            }
            st->has_re = true;
        }
    }
    return 0;
}

bool hc_script_equal(const struct hc_script *a, const struct hc_script *b)
{
    if (a->nsteps != b->nsteps)
        return false;
    for (size_t i = 0; i < a->nsteps; i++) {
        const struct hc_step *x = &a->steps[i], *y = &b->steps[i];
        if (x->kind != y->kind || x->len != y->len || memcmp(x->data, y->data, x->len) != 0)
            return false;
    }
    return true;
}

void hc_script_free(struct hc_script *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nsteps; i++) {
        if (s->steps[i].has_re)
            regfree(&s->steps[i].re);
        free((void *)s->steps[i].data);
    }
    free(s->steps);
    memset(s, 0, sizeof(*s));
}

static bool found(const struct hc_step *st, const uint8_t *data, size_t len)
{
    if (st->has_re) {
        /* REG_STARTEND matches the bytes as they are, NULs included. */
        regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
        return len > 0 && regexec(&st->re, (const char *)data, 1, &m, REG_STARTEND) == 0;
    }
    if (st->len == 0)
        return true;
    return len >= st->len && memmem(data, len, st->data, st->len) != NULL;
}

enum hc_verdict hc_step_judge(const struct hc_step *st, const uint8_t *data, size_t len, bool final)
{
    bool negated = st->kind == API_CMD_EXPECT_NOT || st->kind == API_CMD_EXPECT_NOT_REGEX;
    bool hit = found(st, data, len);
    if (!negated)
        return hit ? HC_PASS : final ? HC_FAIL : HC_WAIT;
    if (hit)
        return HC_FAIL;
    /* A silent peer proves nothing: a negated expect needs an answer. */
    return final ? (len > 0 ? HC_PASS : HC_FAIL) : HC_WAIT;
}

void hc_escape(const uint8_t *data, size_t len, size_t max, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    size_t o = 0, i = 0, n = len < max ? len : max;
    for (; i < n; i++) {
        char tmp[5];
        uint8_t c = data[i];
        if (c == '\r')
            strcpy(tmp, "\\r");
        else if (c == '\n')
            strcpy(tmp, "\\n");
        else if (c == '\t')
            strcpy(tmp, "\\t");
        else if (c == '"' || c == '\\')
            snprintf(tmp, sizeof(tmp), "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
        else
            snprintf(tmp, sizeof(tmp), "%c", c);
        size_t t = strlen(tmp);
        if (o + t + 3 >= outlen) /* keep room for "..." and the NUL */
            break;
        memcpy(out + o, tmp, t);
        o += t;
    }
    if (i < len && o + 3 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

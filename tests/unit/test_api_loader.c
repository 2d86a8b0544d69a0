/* Unit tests for apidefs/api_loader.c: a folder of definitions and the checks
 * that span files. Each test gets a fresh temporary folder, removed afterwards. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "api_loader.h"

/* ---- fixtures ----------------------------------------------------------------- */

struct fx {
    char dir[64];
    struct api_set set;
    struct api_diags diags;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof(fx->dir), "%s/tcpgate-loader-XXXXXX",
             tmp != NULL && strlen(tmp) < 32 ? tmp : "/tmp");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path);
    return unlink(path);
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    api_set_free(&fx->set);
    api_diags_free(&fx->diags);
    /* Give back permissions taken away by a test, then remove everything. */
    char path[256];
    snprintf(path, sizeof(path), "%s/c.json", fx->dir);
    (void)chmod(path, 0600);
    int rc = nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return rc;
}

static void path_of(const struct fx *fx, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", fx->dir, name);
}

static void write_file(const struct fx *fx, const char *name, const char *text)
{
    char path[256];
    path_of(fx, name, path, sizeof(path));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* Writes a definition; api_id NULL leaves it to default to the file's stem. */
static void write_def(const struct fx *fx, const char *name, const char *api_id, int port,
                      const char *proto, const char *domain, int active)
{
    char text[512], idfield[128] = "";
    if (api_id != NULL)
        snprintf(idfield, sizeof(idfield), "\"api_id\": \"%s\", ", api_id);
    snprintf(text, sizeof(text),
             "{%s\"listen_port\": %d, \"protocol\": \"%s\", \"domain\": \"%s\", "
             "\"active\": %s, \"proxy\": {\"target_url\": \"tcp://upstream:1\"}}\n",
             idfield, port, proto, domain, active ? "true" : "false");
    write_file(fx, name, text);
}

static int load(struct fx *fx, api_port_allowed_fn allowed, void *ctx)
{
    return api_load_dir(fx->dir, allowed, ctx, &fx->set, &fx->diags);
}

static void dump_diags(const struct api_diags *d)
{
    for (size_t i = 0; i < d->count; i++)
        print_message("  diag %zu: %s %s: %s: %s\n", i,
                      d->items[i].severity == API_SEV_ERROR ? "error" : "warning", d->items[i].file,
                      d->items[i].field, d->items[i].reason);
}

/* Asserts diagnostic i: an error on `name` in the folder, field, and that the
 * reason mentions each of the given strings. */
static void assert_diag(const struct fx *fx, size_t i, const char *name, const char *field,
                        const char *needle1, const char *needle2)
{
    if (i >= fx->diags.count) {
        dump_diags(&fx->diags);
        fail_msg("no diagnostic #%zu", i);
    }
    const struct api_diag *it = &fx->diags.items[i];
    char path[256];
    path_of(fx, name, path, sizeof(path));
    assert_int_equal(it->severity, API_SEV_ERROR);
    assert_string_equal(it->file, path);
    assert_string_equal(it->field, field);
    const char *needles[2] = {needle1, needle2};
    for (int k = 0; k < 2; k++)
        if (needles[k] != NULL && strstr(it->reason, needles[k]) == NULL)
            fail_msg("diagnostic \"%s\" does not mention \"%s\"", it->reason, needles[k]);
}

static void assert_def_file(const struct fx *fx, size_t i, const char *name)
{
    char path[256];
    path_of(fx, name, path, sizeof(path));
    assert_true(i < fx->set.count);
    assert_string_equal(fx->set.defs[i]->file, path);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_empty_folder(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 0);
    assert_int_equal(fx->diags.count, 0);
}

static void test_file_name_order(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "b.json", NULL, 2, "tcp", "", 1);
    write_def(fx, "c.json", NULL, 3, "tcp", "", 1);
    write_def(fx, "a.json", NULL, 1, "tcp", "", 1);
    write_def(fx, "10.json", NULL, 4, "tcp", "", 1);
    write_def(fx, "B.json", NULL, 5, "tcp", "", 1);
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->diags.count, 0);
    assert_int_equal(fx->set.count, 5);
    /* Byte order: digits, then upper case, then lower case. */
    assert_def_file(fx, 0, "10.json");
    assert_def_file(fx, 1, "B.json");
    assert_def_file(fx, 2, "a.json");
    assert_def_file(fx, 3, "b.json");
    assert_def_file(fx, 4, "c.json");
    assert_string_equal(fx->set.defs[0]->api_id, "10");
    assert_string_equal(fx->set.defs[2]->api_id, "a");
    assert_int_equal(fx->set.defs[2]->listen_port, 1);
    assert_int_equal(fx->set.defs[4]->listen_port, 3);
}

static void test_bad_file_skipped(void **state)
{
    struct fx *fx = *state;
    write_file(fx, "a.json", "{ \"listen_port\": 1,\n  broken");
    write_def(fx, "b.json", NULL, 2, "tcp", "", 1);
    write_file(fx, "c.json", "{\"protocol\": \"tcp\", \"proxy\": {\"target_url\": \"h:1\"}}");
    write_def(fx, "d.json", NULL, 4, "tcp", "", 1);
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 2);
    assert_def_file(fx, 0, "b.json");
    assert_def_file(fx, 1, "d.json");
    assert_int_equal(fx->diags.count, 2);
    assert_diag(fx, 0, "a.json", "(json)", "line 2", NULL);
    assert_diag(fx, 1, "c.json", "listen_port", "missing", NULL);
}

static void test_same_port_same_domain_rejected(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", NULL, 9000, "tls", "db.example.com", 1);
    write_def(fx, "b.json", NULL, 9000, "tls", "db.example.com", 1);
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 1);
    assert_def_file(fx, 0, "a.json");
    assert_int_equal(fx->diags.count, 1);
    char first[256];
    path_of(fx, "a.json", first, sizeof(first));
    /* Reported on the later file, naming the earlier one. */
    assert_diag(fx, 0, "b.json", "domain", first, "db.example.com");
    assert_non_null(strstr(fx->diags.items[0].reason, "9000"));
}

static void test_same_port_no_domain_rejected(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", NULL, 9000, "tcp", "", 1);
    write_def(fx, "b.json", NULL, 9000, "tcp", "", 1);
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 1);
    assert_def_file(fx, 0, "a.json");
    char first[256];
    path_of(fx, "a.json", first, sizeof(first));
    assert_int_equal(fx->diags.count, 1);
    assert_diag(fx, 0, "b.json", "domain", first, "without a domain");
}

static void test_same_port_different_domains_accepted(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", NULL, 9000, "tls", "a.example.com", 1);
    write_def(fx, "b.json", NULL, 9000, "tls", "b.example.com", 1);
    write_def(fx, "c.json", NULL, 9000, "tls", "", 1); /* the port's fallback */
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->diags.count, 0);
    assert_int_equal(fx->set.count, 3);
    assert_def_file(fx, 0, "a.json");
    assert_def_file(fx, 1, "b.json");
    assert_def_file(fx, 2, "c.json");
}

static void test_domains_compare_case_insensitively(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", NULL, 9000, "tls", "DB.Example.COM", 1);
    write_def(fx, "b.json", NULL, 9000, "tls", "db.example.com", 1);
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 1);
    assert_def_file(fx, 0, "a.json");
    char first[256];
    path_of(fx, "a.json", first, sizeof(first));
    assert_int_equal(fx->diags.count, 1);
    assert_diag(fx, 0, "b.json", "domain", first, NULL);
}

/* A disabled domain is the empty domain: it collides with the fallback. */
static void test_domain_disabled_claims_fallback(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", NULL, 9000, "tcp", "", 1);
    write_file(fx, "b.json",
               "{\"listen_port\": 9000, \"protocol\": \"tcp\", \"domain\": \"x.example\","
               " \"domain_disabled\": true, \"proxy\": {\"target_url\": \"h:1\"}}");
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 1);
    assert_int_equal(fx->diags.count, 1);
    assert_diag(fx, 0, "b.json", "domain", "a.json", NULL);
}

static void test_same_port_different_protocols_rejected(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", NULL, 9000, "tcp", "a.example.com", 1);
    write_def(fx, "b.json", NULL, 9000, "tls", "b.example.com", 1);
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 1);
    assert_def_file(fx, 0, "a.json");
    char first[256];
    path_of(fx, "a.json", first, sizeof(first));
    assert_int_equal(fx->diags.count, 1);
    assert_diag(fx, 0, "b.json", "protocol", first, "tcp");
}

static void test_duplicate_api_id_rejected(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", "same-id", 9000, "tcp", "", 1);
    write_def(fx, "b.json", "same-id", 9001, "tcp", "", 1);
    write_def(fx, "c.json", "other-id", 9002, "tcp", "", 1);
    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->set.count, 2);
    assert_def_file(fx, 0, "a.json");
    assert_def_file(fx, 1, "c.json");
    char first[256];
    path_of(fx, "a.json", first, sizeof(first));
    assert_int_equal(fx->diags.count, 1);
    assert_diag(fx, 0, "b.json", "api_id", first, "same-id");
}

static void test_inactive_kept_but_claims_nothing(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "a.json", NULL, 9000, "tls", "db.example.com", 0);
    write_def(fx, "b.json", NULL, 9000, "tcp", "", 0);
    write_def(fx, "c.json", NULL, 9000, "tls", "db.example.com", 1);
    write_def(fx, "d.json", NULL, 9000, "tls", "db.example.com", 0); /* after an active one */
    assert_int_equal(load(fx, NULL, NULL), 0);
    if (fx->diags.count != 0)
        dump_diags(&fx->diags);
    assert_int_equal(fx->diags.count, 0);
    assert_int_equal(fx->set.count, 4);
    assert_false(fx->set.defs[0]->active);
    assert_false(fx->set.defs[1]->active);
    assert_true(fx->set.defs[2]->active);
    assert_false(fx->set.defs[3]->active);
    assert_def_file(fx, 2, "c.json");
}

struct wl {
    int calls;
    int port;
    enum api_protocol proto;
};

static bool allow_one(void *ctx, enum api_protocol proto, int port)
{
    struct wl *wl = ctx;
    wl->calls++;
    return proto == wl->proto && port == wl->port;
}

static void test_whitelist_rejects_port(void **state)
{
    struct fx *fx = *state;
    struct wl wl = {.calls = 0, .port = 9000, .proto = API_PROTO_TCP};
    write_def(fx, "a.json", NULL, 9000, "tcp", "", 1);
    write_def(fx, "b.json", NULL, 9001, "tcp", "", 1);
    write_def(fx, "c.json", NULL, 9000, "tls", "x.example", 1);
    assert_int_equal(load(fx, allow_one, &wl), 0);
    assert_int_equal(wl.calls, 3);
    assert_int_equal(fx->set.count, 1);
    assert_def_file(fx, 0, "a.json");
    assert_int_equal(fx->diags.count, 2);
    assert_diag(fx, 0, "b.json", "listen_port", "9001", "ports_whitelist");
    assert_diag(fx, 1, "c.json", "listen_port", "9000", "tls");
}

static void test_non_json_files_ignored(void **state)
{
    struct fx *fx = *state;
    write_def(fx, "good.json", NULL, 1, "tcp", "", 1);
    write_file(fx, "readme.txt", "not json");
    write_file(fx, "good.json.bak", "not json");
    write_file(fx, "good.jsonl", "not json");
    write_file(fx, ".hidden.json", "not json");
    write_file(fx, ".json", "not json");
    write_file(fx, "json", "not json");
    char sub[256];
    path_of(fx, "sub", sub, sizeof(sub));
    assert_int_equal(mkdir(sub, 0700), 0);
    write_file(fx, "sub/nested.json", "not json"); /* not recursive */
    assert_int_equal(load(fx, NULL, NULL), 0);
    if (fx->diags.count != 0)
        dump_diags(&fx->diags);
    assert_int_equal(fx->diags.count, 0);
    assert_int_equal(fx->set.count, 1);
    assert_def_file(fx, 0, "good.json");
}

static void test_missing_folder(void **state)
{
    struct fx *fx = *state;
    char missing[256];
    path_of(fx, "no-such-dir", missing, sizeof(missing));
    assert_int_equal(api_load_dir(missing, NULL, NULL, &fx->set, &fx->diags), -1);
    assert_int_equal(fx->set.count, 0);
    assert_int_equal(fx->diags.count, 1);
    assert_int_equal(fx->diags.items[0].severity, API_SEV_ERROR);
    assert_string_equal(fx->diags.items[0].file, missing);
    assert_string_equal(fx->diags.items[0].field, "app_path");
    assert_non_null(strstr(fx->diags.items[0].reason, "cannot read folder"));
}

static void test_unreadable_files_reported(void **state)
{
    struct fx *fx = *state;
    char path[256], target[256];
    /* a.json: a dangling symlink cannot be opened. */
    path_of(fx, "a.json", path, sizeof(path));
    path_of(fx, "nowhere", target, sizeof(target));
    assert_int_equal(symlink(target, path), 0);
    /* b.json: a folder is not a regular file. */
    path_of(fx, "b.json", path, sizeof(path));
    assert_int_equal(mkdir(path, 0700), 0);
    /* c.json: no read permission (root reads it anyway). */
    write_def(fx, "c.json", NULL, 3, "tcp", "", 1);
    path_of(fx, "c.json", path, sizeof(path));
    assert_int_equal(chmod(path, 0), 0);
    write_def(fx, "d.json", NULL, 4, "tcp", "", 1);

    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_diag(fx, 0, "a.json", "(file)", "cannot open", NULL);
    assert_diag(fx, 1, "b.json", "(file)", "not a regular file", NULL);
    if (geteuid() != 0) {
        assert_int_equal(fx->diags.count, 3);
        assert_diag(fx, 2, "c.json", "(file)", "cannot open", NULL);
        assert_int_equal(fx->set.count, 1);
        assert_def_file(fx, 0, "d.json");
    } else {
        assert_int_equal(fx->diags.count, 2);
        assert_int_equal(fx->set.count, 2);
        assert_def_file(fx, 1, "d.json");
    }
}

static void test_oversized_file_reported(void **state)
{
    struct fx *fx = *state;
    char path[256];
    /* One byte over the limit: rejected unread. */
    path_of(fx, "a.json", path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)API_FILE_MAX + 1), 0);
    close(fd);

    /* Exactly at the limit: a valid definition padded with spaces loads. */
    static const char def[] =
        "{\"listen_port\": 2, \"protocol\": \"tcp\", \"proxy\": {\"target_url\": \"h:1\"}}";
    char *big = malloc(API_FILE_MAX);
    assert_non_null(big);
    memset(big, ' ', API_FILE_MAX);
    memcpy(big, def, strlen(def));
    path_of(fx, "b.json", path, sizeof(path));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(big, 1, API_FILE_MAX, f), API_FILE_MAX);
    assert_int_equal(fclose(f), 0);
    free(big);

    assert_int_equal(load(fx, NULL, NULL), 0);
    assert_int_equal(fx->diags.count, 1);
    assert_diag(fx, 0, "a.json", "(file)", "too large", NULL);
    assert_int_equal(fx->set.count, 1);
    assert_def_file(fx, 0, "b.json");
    assert_int_equal(fx->set.defs[0]->listen_port, 2);
}

/* api_set_add directly: it owns what it is given, kept or freed. */
static void test_set_add_direct(void **state)
{
    struct fx *fx = *state;
    static const char json[] =
        "{\"listen_port\": 7000, \"protocol\": \"tcp\", \"proxy\": {\"target_url\": \"h:1\"}}";
    struct api_def *d1 = api_def_parse("mem/one.json", json, strlen(json), &fx->diags);
    struct api_def *d2 = api_def_parse("mem/two.json", json, strlen(json), &fx->diags);
    assert_non_null(d1);
    assert_non_null(d2);
    assert_int_equal(api_set_add(&fx->set, d1, NULL, NULL, &fx->diags), 0);
    assert_int_equal(api_set_add(&fx->set, d2, NULL, NULL, &fx->diags), -1); /* d2 freed */
    assert_int_equal(fx->set.count, 1);
    assert_ptr_equal(fx->set.defs[0], d1);
    assert_int_equal(fx->diags.count, 1);
    assert_string_equal(fx->diags.items[0].file, "mem/two.json");
    assert_string_equal(fx->diags.items[0].field, "domain");
    assert_non_null(strstr(fx->diags.items[0].reason, "mem/one.json"));

    /* Many additions grow the set. */
    for (int i = 0; i < 40; i++) {
        char text[160], name[32];
        snprintf(text, sizeof(text),
                 "{\"listen_port\": %d, \"protocol\": \"tcp\", \"proxy\": {\"target_url\": "
                 "\"h:1\"}}",
                 8000 + i);
        snprintf(name, sizeof(name), "mem/%d.json", i);
        struct api_def *d = api_def_parse(name, text, strlen(text), &fx->diags);
        assert_non_null(d);
        assert_int_equal(api_set_add(&fx->set, d, NULL, NULL, &fx->diags), 0);
    }
    assert_int_equal(fx->set.count, 41);
    assert_int_equal(fx->set.defs[40]->listen_port, 8039);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_empty_folder),
        T(test_file_name_order),
        T(test_bad_file_skipped),
        T(test_same_port_same_domain_rejected),
        T(test_same_port_no_domain_rejected),
        T(test_same_port_different_domains_accepted),
        T(test_domains_compare_case_insensitively),
        T(test_domain_disabled_claims_fallback),
        T(test_same_port_different_protocols_rejected),
        T(test_duplicate_api_id_rejected),
        T(test_inactive_kept_but_claims_nothing),
        T(test_whitelist_rejects_port),
        T(test_non_json_files_ignored),
        T(test_missing_folder),
        T(test_unreadable_files_reported),
        T(test_oversized_file_reported),
        T(test_set_add_direct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

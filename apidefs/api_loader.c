#include "api_loader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct api_def *find_conflict(const struct api_set *set, const struct api_def *def,
                                           const char **what)
{
    for (size_t i = 0; i < set->count; i++) {
        const struct api_def *o = set->defs[i];
        if (strcmp(o->api_id, def->api_id) == 0) {
            *what = "api_id";
            return o;
        }
        if (!o->active || !def->active)
            continue;
        if (o->listen_port != def->listen_port)
            continue;
        if (o->protocol != def->protocol) {
            *what = "protocol";
            return o;
        }
        if (o->enable_proxy_protocol != def->enable_proxy_protocol) {
            *what = "enable_proxy_protocol";
            return o;
        }
        if (strcasecmp(api_def_domain(o), api_def_domain(def)) == 0) {
            *what = "domain";
            return o;
        }
    }
    return NULL;
}

int api_set_add(struct api_set *set, struct api_def *def, api_port_allowed_fn allowed, void *ctx,
                struct api_diags *diags)
{
    if (def->active && allowed != NULL && !allowed(ctx, def->protocol, def->listen_port)) {
        api_diags_add(diags, API_SEV_ERROR, def->file, "listen_port",
                      "port %d is not allowed for %s by the gateway's ports_whitelist",
                      def->listen_port, api_protocol_name(def->protocol));
        api_def_free(def);
        return -1;
    }
    const char *what = NULL;
    const struct api_def *o = find_conflict(set, def, &what);
    if (o != NULL) {
        if (strcmp(what, "api_id") == 0)
            api_diags_add(diags, API_SEV_ERROR, def->file, "api_id", "\"%s\" is already used by %s",
                          def->api_id, o->file);
        else if (strcmp(what, "enable_proxy_protocol") == 0)
            api_diags_add(diags, API_SEV_ERROR, def->file, "enable_proxy_protocol",
                          "port %d reads a PROXY header %s in %s; every definition on a port "
                          "must agree, since the header comes before anything else",
                          def->listen_port, o->enable_proxy_protocol ? "first" : "never", o->file);
        else if (strcmp(what, "protocol") == 0)
            api_diags_add(diags, API_SEV_ERROR, def->file, "protocol",
                          "port %d is already served as %s by %s; one port has one protocol",
                          def->listen_port, api_protocol_name(o->protocol), o->file);
        else if (api_def_domain(def)[0] == '\0')
            api_diags_add(diags, API_SEV_ERROR, def->file, "domain",
                          "port %d already has a definition without a domain in %s",
                          def->listen_port, o->file);
        else
            api_diags_add(diags, API_SEV_ERROR, def->file, "domain",
                          "port %d and domain \"%s\" are already claimed by %s", def->listen_port,
                          api_def_domain(def), o->file);
        api_def_free(def);
        return -1;
    }
    if (set->count == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 16;
        struct api_def **n = realloc(set->defs, cap * sizeof(*n));
        if (n == NULL)
            abort();
        set->defs = n;
        set->cap = cap;
    }
    set->defs[set->count++] = def;
    return 0;
}

static int json_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

static int byname(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Reads a whole regular file; returns NULL with a reason. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot stat: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        goto fail;
    }
    if (st.st_size > API_FILE_MAX) {
        snprintf(err, errlen, "file too large (%lld bytes, limit %d)", (long long)st.st_size,
                 API_FILE_MAX);
        goto fail;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        abort();
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read: %s", strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *len = got;
    close(fd);
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

int api_load_dir(const char *dir, api_port_allowed_fn allowed, void *ctx, struct api_set *out,
                 struct api_diags *diags)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, json_file, byname);
    if (n < 0) {
        api_diags_add(diags, API_SEV_ERROR, dir, "app_path", "cannot read folder: %s",
                      strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        free(names[i]);
        char err[256];
        size_t len = 0;
        char *text = read_file(path, &len, err, sizeof(err));
        if (text == NULL) {
            api_diags_add(diags, API_SEV_ERROR, path, "(file)", "%s", err);
            continue;
        }
        struct api_def *def = api_def_parse(path, text, len, diags);
        free(text);
        if (def != NULL)
            (void)api_set_add(out, def, allowed, ctx, diags);
    }
    free(names);
    return 0;
}

void api_set_free(struct api_set *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->count; i++)
        api_def_free(set->defs[i]);
    free(set->defs);
    memset(set, 0, sizeof(*set));
}

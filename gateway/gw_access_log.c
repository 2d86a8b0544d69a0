#include "gw_access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What may wait for the writer: at about 300 bytes a line, some 13,000
 * connections' worth. */
#define QUEUE_BYTES (4u << 20)

struct gw_access_log {
    char *path; /* NULL: stderr */
    int fd;
    pthread_t writer;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    char *queue; /* a ring of QUEUE_BYTES */
    size_t head, len;
    bool reopen, stop;
    uint64_t dropped;
};

static int open_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        snprintf(err, errlen, "access log %s: %s", path, strerror(errno));
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* a full disk loses lines, never the gateway */
        p += w;
        n -= (size_t)w;
    }
}

static void *writer_main(void *arg)
{
    struct gw_access_log *l = arg;
    char *chunk = malloc(QUEUE_BYTES);
    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (l->len == 0 && !l->stop && !l->reopen)
            pthread_cond_wait(&l->wake, &l->lock);
        if (l->reopen && l->path != NULL) {
            char err[256];
            int fd = open_file(l->path, err, sizeof(err));
            if (fd >= 0) {
                close(l->fd);
                l->fd = fd;
            } else {
                fprintf(stderr, "%s\n", err);
            }
        }
        l->reopen = false;
        if (l->len == 0 && l->stop)
            break;
        /* Take everything queued, then write it without holding the lock. */
        size_t n = l->len, first = QUEUE_BYTES - l->head < n ? QUEUE_BYTES - l->head : n;
        if (chunk != NULL) {
            memcpy(chunk, l->queue + l->head, first);
            memcpy(chunk + first, l->queue, n - first);
        }
        l->head = (l->head + n) % QUEUE_BYTES;
        l->len = 0;
        int fd = l->fd;
        pthread_mutex_unlock(&l->lock);
        if (chunk != NULL)
            write_all(fd, chunk, n);
        pthread_mutex_lock(&l->lock);
    }
    pthread_mutex_unlock(&l->lock);
    free(chunk);
    return NULL;
}

struct gw_access_log *gw_access_log_open(const char *target, char *err, size_t errlen)
{
    struct gw_access_log *l = calloc(1, sizeof(*l));
    if (l == NULL)
        goto fail_mem;
    l->fd = -1;
    if (strcmp(target, "stderr") == 0) {
        l->fd = dup(STDERR_FILENO);
    } else {
        l->path = strdup(target);
        if (l->path == NULL)
            goto fail_mem;
        l->fd = open_file(target, err, errlen);
        if (l->fd < 0)
            goto fail;
    }
    l->queue = malloc(QUEUE_BYTES);
    if (l->queue == NULL || l->fd < 0)
        goto fail_mem;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->wake, NULL);
    if (pthread_create(&l->writer, NULL, writer_main, l) != 0) {
        snprintf(err, errlen, "access log: cannot start its writer: %s", strerror(errno));
        pthread_cond_destroy(&l->wake);
        pthread_mutex_destroy(&l->lock);
        goto fail;
    }
    return l;
fail_mem:
    snprintf(err, errlen, "access log: out of memory");
fail:
    if (l != NULL) {
        if (l->fd >= 0)
            close(l->fd);
        free(l->queue);
        free(l->path);
        free(l);
    }
    return NULL;
}

void gw_access_log_close(struct gw_access_log *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->lock);
    l->stop = true;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->writer, NULL);
    pthread_cond_destroy(&l->wake);
    pthread_mutex_destroy(&l->lock);
    close(l->fd);
    free(l->queue);
    free(l->path);
    free(l);
}

void gw_access_log_write(struct gw_access_log *l, const char *line, size_t len)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->lock);
    if (l->len + len + 1 > QUEUE_BYTES) {
        l->dropped++;
        pthread_mutex_unlock(&l->lock);
        return;
    }
    size_t tail = (l->head + l->len) % QUEUE_BYTES;
    size_t first = QUEUE_BYTES - tail < len ? QUEUE_BYTES - tail : len;
    memcpy(l->queue + tail, line, first);
    memcpy(l->queue, line + first, len - first);
    l->queue[(tail + len) % QUEUE_BYTES] = '\n';
    bool was_empty = l->len == 0;
    l->len += len + 1;
    if (was_empty)
        pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->lock);
}

void gw_access_log_reopen(struct gw_access_log *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->lock);
    l->reopen = true;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->lock);
}

uint64_t gw_access_log_dropped(const struct gw_access_log *l)
{
    if (l == NULL)
        return 0;
    struct gw_access_log *m = (struct gw_access_log *)l;
    pthread_mutex_lock(&m->lock);
    uint64_t n = m->dropped;
    pthread_mutex_unlock(&m->lock);
    return n;
}

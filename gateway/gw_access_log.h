/* The access log: one JSON line per connection, to a file or stderr. Workers
 * hand lines to a queue and a writer thread does the I/O, so a slow disk
 * never stalls a worker; when the queue is full a line is dropped and
 * counted instead. */
#ifndef GW_ACCESS_LOG_H
#define GW_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

struct gw_access_log;

/* target is "stderr" or a file path (appended to). NULL with a reason when
 * the file cannot be opened or the writer not started. */
struct gw_access_log *gw_access_log_open(const char *target, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes out what is queued, stops the writer and closes. Accepts NULL. */
void gw_access_log_close(struct gw_access_log *l);

/* Any thread: queues one line; a newline is added. Accepts NULL. */
void gw_access_log_write(struct gw_access_log *l, const char *line, size_t len);

/* Any thread: the file is opened again before the next write (logrotate,
 * through SIGUSR1). Accepts NULL. */
void gw_access_log_reopen(struct gw_access_log *l);

/* Lines dropped because the queue was full. */
uint64_t gw_access_log_dropped(const struct gw_access_log *l);

#endif

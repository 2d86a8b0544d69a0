/* What the health-check room's modules share with one another and not with
 * the gateway: the engine's loop and resolver, its list of Sentinel
 * watchers, and the callbacks a watcher uses to reach the engine's checks and
 * the gateway. Control thread only. */
#ifndef HC_INTERNAL_H
#define HC_INTERNAL_H

#include <event2/dns.h>
#include <event2/event.h>
#include <sys/socket.h>

#include "hc_engine.h"
#include "hc_sentinel.h"

struct event_base *hc_engine_base(const struct hc_engine *e);
/* The resolver for names, made on first use; NULL when it cannot be. */
struct evdns_base *hc_engine_dns(struct hc_engine *e);

/* The head of the engine's list of watchers (linked through their own next). */
struct hc_sentinel **hc_engine_watchers(struct hc_engine *e);

/* Eligibility changed without a check: the gateway closes what it must and
 * picks up nodes a watcher added. */
void hc_engine_changed(struct hc_engine *e);

/* A watcher cannot go on as it is (its node table is full): the next reload
 * replaces it, and the gateway is asked for one. */
void hc_engine_ask_reload(struct hc_engine *e);

/* The sentinels named addr: its checks that belong to watcher w run at once,
 * and one pass is enough to bring them up. */
void hc_engine_expedite(struct hc_engine *e, const struct hc_sentinel *w,
                        const struct sockaddr *addr);

/* Frees every watcher of a list, whatever their references (engine free). */
void hc_sentinel_free_all(struct hc_sentinel *list);

#endif

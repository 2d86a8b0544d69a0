/* Routing by TLS server name: an exact name beats a one-label wildcard
 * ("*.example.com"), which beats the fallback (the definition with an empty
 * domain). Matching ignores case and a trailing dot. Lookups are O(1), so a port
 * with a thousand names routes as fast as a port with one. */
#ifndef GW_SNI_H
#define GW_SNI_H

#include <stdbool.h>
#include <stddef.h>

struct gw_sni;

struct gw_sni *gw_sni_new(size_t expected) __attribute__((warn_unused_result));
void gw_sni_free(struct gw_sni *t);

/* Adds a domain ("" for the fallback). Returns -1 if it is already present. */
int gw_sni_add(struct gw_sni *t, const char *domain, void *value);

/* The value for a client's server name (NULL when it sent none): exact, then
 * wildcard, then fallback. NULL when nothing matches. */
void *gw_sni_lookup(const struct gw_sni *t, const char *name);

#endif

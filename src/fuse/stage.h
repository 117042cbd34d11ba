/*
 * stage.h - files being written through the mount, staged on the cache disk until their store
 * has them. See stage.c for the journal and its states.
 */
#ifndef SL_FUSE_STAGE_H
#define SL_FUSE_STAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "sluice.h"

struct stage;

/* The open staged files of one mount, by path. */
struct stages {
    sl_t *sl;
    char *dir; /* CACHE_DIR/journal */
    pthread_mutex_t lock; /* guards the list and every stage's refs and path, and stop */
    struct stage *head;
    pthread_cond_t wake; /* the retry thread's (CLOCK_MONOTONIC) */
    pthread_t retrier;
    bool retrying, stop;
};

/* A staged file in a listing. */
struct stage_entry {
    char *name;
    uint64_t size;
};

/* Opens the journal in CACHE_DIR/journal and uploads what a killed mount left acknowledged
 * there (fsync or close returned 0, the store does not have it yet). *pending: entries that
 * still could not be uploaded: staged files of this mount now, tried again with the rest.
 * Starts the thread that retries failed uploads. */
int sl__stages_open(struct stages *S, sl_t *sl, int *recovered, int *pending);
/* Uploads every staged file that changed (at unmount: files still open, and those whose upload
 * failed); returns how many failed again (they stay in the journal for the next mount). */
int sl__stages_drain(struct stages *S);
void sl__stages_close(struct stages *S);
/* The staged files directly in folder dir, sorted by name, with their sizes (*count of
 * them; the caller frees each name and the array). */
int sl__stages_in(struct stages *S, const char *dir, struct stage_entry **out, size_t *count);

/* The staged file at path, with a reference, or NULL. */
struct stage *sl__stage_find(struct stages *S, const char *path);
/* Stages path for writing: the one already open, or a new one, empty when truncate, else
 * holding the store's current bytes. */
int sl__stage_open(struct stages *S, const char *path, bool truncate, struct stage **out);
/* Drops a reference; the last one closes the staged file, unless it is acknowledged and not
 * uploaded (then it stays, for readers and for the retries). */
void sl__stage_release(struct stages *S, struct stage *s);

int sl__stage_write(struct stage *s, const void *buf, size_t len, uint64_t off);
int sl__stage_read(struct stage *s, void *buf, size_t len, uint64_t off, size_t *n);
int sl__stage_truncate(struct stage *s, uint64_t size);
uint64_t sl__stage_size(struct stage *s);
/* Makes what was written durable in the journal (fsync): after a crash, the next mount uploads
 * it. */
int sl__stage_sync(struct stages *S, struct stage *s);
/* Syncs, then uploads to the store if anything changed since the last upload (close). */
int sl__stage_upload(struct stages *S, struct stage *s);
/* The file was removed or renamed away in the store: nothing to upload under this name. */
void sl__stage_forget(struct stages *S, struct stage *s);
/* Renames a staged file (and those below a renamed directory). */
void sl__stages_rename(struct stages *S, const char *from, const char *to);

#endif /* SL_FUSE_STAGE_H */

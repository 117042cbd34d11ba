/*
 * control.h - MOUNT/.sluice/, the mount's control files (control.c). Public API only.
 */
#ifndef SL_CONTROL_H
#define SL_CONTROL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>

#include "sluice.h"

#define SL_CONTROL_DIR "/.sluice"

struct control;
struct control_file;

/* True for SL_CONTROL_DIR and every path below it. */
bool sl__control_path(const char *path);
/* What the control folder and its files are; -ENOENT for other names in it. */
int sl__control_stat(const char *path, sl_stat_t *st);
int sl__control_list(const char *path, sl_list_cb cb, void *arg);

/* The control state of a mount of sl at mountpoint. fini stops the running order. */
int sl__control_init(sl_t *sl, const char *mountpoint, struct control **out);
void sl__control_fini(struct control *c);

/* append: opened with O_APPEND, what is written at close goes on the end of the running order. */
int sl__control_open(struct control *c, const char *path, bool write, bool append,
                     struct control_file **out);
int sl__control_write(struct control_file *f, const char *buf, size_t n, uint64_t off);
int sl__control_read(struct control_file *f, char *buf, size_t n, uint64_t off, size_t *got);
/* At close: what was written takes effect (SL_E_USAGE for a bad order, logged). */
int sl__control_flush(struct control *c, struct control_file *f);
void sl__control_close(struct control_file *f);

#endif /* SL_CONTROL_H */

/*
 * profile.h - the I/O profile of a stage (profile.c), from what sluice-trace.so (trace.c) saw
 * its processes read and write; `sluice report` prints them.
 */
#ifndef SL_PIPELINE_PROFILE_H
#define SL_PIPELINE_PROFILE_H

#include <json-c/json.h>

/* The name of the preloaded library, looked for next to the sluice binary first. */
#define SL_TRACE_LIB "sluice-trace.so"

/* Sums the trace lines under trace_dir (one PID.tsv per process of the stage) into a profile:
 * {"bytes_read", "bytes_written", "files_read", "files_written", "reads", "writes",
 *  "read_write_ratio", "kind", "sequential_share", "access", "mean_read",
 *  "file_sizes": {"small", "medium", "large"}, "file_size_class", "files",
 *  "file_count_class"}. A folder without lines is a stage that moved no bytes. *out is the
 * caller's (json_object_put). */
int sl_profile_collect(const char *trace_dir, struct json_object **out);

/* The path of sluice-trace.so for a sluice binary at exe (NULL: none found; the caller frees):
 * $SLUICE_TRACE_LIB, else next to exe (the build tree), else exe's ../lib/sluice/. */
char *sl_profile_trace_lib(const char *exe);

#endif /* SL_PIPELINE_PROFILE_H */

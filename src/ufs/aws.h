/*
 * aws.h - an S3 mount's credentials, region and endpoint, found as the AWS tools find them.
 */
#ifndef SL_AWS_H
#define SL_AWS_H

#include "core/core.h"

struct sl_aws {
    char *access_key, *secret_key, *session_token; /* NULL: no credentials (unsigned requests) */
    char *region;                                  /* never NULL */
    char *endpoint;                                /* NULL: AWS */
    char *source;                                  /* where the credentials came from */
};

/* Fills out from the mount's keys (mc may be NULL), the environment and ~/.aws; free with
 * sl__aws_free(). */
int sl__aws_resolve(const struct sl_mount_cfg *mc, struct sl_aws *out);
void sl__aws_free(struct sl_aws *a);

#endif /* SL_AWS_H */

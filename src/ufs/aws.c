/*
 * aws.c - where an S3 mount's credentials, region and endpoint come from, in the order the
 * AWS CLI and SDKs use, so that a machine set up for `aws s3` works with sluice unchanged:
 *
 *   credentials: the mount's access_key/secret_key; AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY
 *                (+ AWS_SESSION_TOKEN); the profile (AWS_PROFILE, else "default") in
 *                ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE), then in ~/.aws/config
 *                (AWS_CONFIG_FILE, section "[profile NAME]"); else none: unsigned requests,
 *                which public buckets accept.
 *   region:      the mount's region; AWS_REGION; AWS_DEFAULT_REGION; the profile's region in
 *                ~/.aws/config; us-east-1.
 *   endpoint:    the mount's endpoint; AWS_ENDPOINT_URL_S3; AWS_ENDPOINT_URL; AWS itself.
 *
 * Each result says where it came from, for error messages ("credentials from profile ci in
 * /root/.aws/credentials").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ufs/aws.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Looks up key in [section] of an INI file; the caller frees the value. NULL if absent. */
static char *ini_get(const char *file, const char *section, const char *key)
{
    FILE *f = fopen(file, "re");
    char *line = NULL, *found = NULL;
    size_t cap = 0;
    bool in = false;

    if (!f) return NULL;
    while (!found && getline(&line, &cap, f) >= 0) {
        char *s = trim(line);
        if (*s == '#' || *s == ';' || !*s) continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (end) *end = '\0';
            in = strcmp(trim(s + 1), section) == 0;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!in || !eq) continue;
        *eq = '\0';
        if (strcmp(trim(s), key) == 0) found = sl__strdup(trim(eq + 1));
    }
    free(line);
    fclose(f);
    return found;
}

static char *aws_file(const char *env_name, const char *base)
{
    const char *e = env(env_name), *home = env("HOME");
    if (e) return sl__strdup(e);
    return sl__asprintf("%s/.aws/%s", home ? home : "", base);
}

static const char *profile_name(void)
{
    const char *p = env("AWS_PROFILE");
    if (!p) p = env("AWS_DEFAULT_PROFILE");
    return p ? p : "default";
}

enum { IN_CREDENTIALS = 1, IN_CONFIG = 2 };

/* key from the profile: in the credentials file, then in the config file (as `in` allows).
 * *found (may be NULL) says which file had it. */
static char *profile_get(const char *key, int in, char **where, int *found)
{
    const char *prof = profile_name();
    char *v = NULL, *file;

    if ((in & IN_CREDENTIALS) && (file = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))) {
        v = ini_get(file, prof, key);
        if (v && where) *where = sl__asprintf("profile %s in %s", prof, file);
        free(file);
        if (v && found) *found = IN_CREDENTIALS;
        if (v) return v;
    }
    if ((in & IN_CONFIG) && (file = aws_file("AWS_CONFIG_FILE", "config"))) {
        if (found) *found = IN_CONFIG;
        char *section = strcmp(prof, "default") == 0 ? sl__strdup("default")
                                                     : sl__asprintf("profile %s", prof);
        if (section) v = ini_get(file, section, key);
        if (v && where) *where = sl__asprintf("profile %s in %s", prof, file);
        free(section);
        free(file);
    }
    return v;
}

int sl__aws_resolve(const struct sl_mount_cfg *mc, struct sl_aws *out)
{
    memset(out, 0, sizeof(*out));

    if (mc && (!mc->access_key) != (!mc->secret_key))
        return sl__err(SL_E_CONFIG, "mounts: %s: has %s but no %s (give both, or neither to use "
                       "the AWS environment and files)", mc->path,
                       mc->access_key ? "access_key" : "secret_key",
                       mc->access_key ? "secret_key" : "access_key");
    if (mc && mc->access_key && mc->secret_key) {
        out->access_key = sl__strdup(mc->access_key);
        out->secret_key = sl__strdup(mc->secret_key);
        out->source = sl__asprintf("access_key of mount %s", mc->path);
    } else if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
        out->access_key = sl__strdup(env("AWS_ACCESS_KEY_ID"));
        out->secret_key = sl__strdup(env("AWS_SECRET_ACCESS_KEY"));
        if (env("AWS_SESSION_TOKEN")) out->session_token = sl__strdup(env("AWS_SESSION_TOKEN"));
        out->source = sl__strdup("AWS_ACCESS_KEY_ID");
    } else {
        char *where = NULL;
        int in = 0;
        out->access_key = profile_get("aws_access_key_id", IN_CREDENTIALS | IN_CONFIG, &where, &in);
        if (out->access_key) {
            /* The secret and token come from the same file as the key id. */
            out->secret_key = profile_get("aws_secret_access_key", in, NULL, NULL);
            out->session_token = profile_get("aws_session_token", in, NULL, NULL);
            out->source = where;
        }
        if (out->access_key && !out->secret_key) {
            int rc = sl__err(SL_E_CONFIG, "%s: has aws_access_key_id but no "
                                          "aws_secret_access_key", where ? where : "profile");
            sl__aws_free(out);
            return rc;
        }
    }

    const char *r = mc && mc->region ? mc->region : env("AWS_REGION");
    if (!r) r = env("AWS_DEFAULT_REGION");
    out->region = r ? sl__strdup(r) : profile_get("region", IN_CONFIG, NULL, NULL);
    if (!out->region) out->region = sl__strdup("us-east-1");

    const char *e = mc && mc->endpoint ? mc->endpoint : env("AWS_ENDPOINT_URL_S3");
    if (!e) e = env("AWS_ENDPOINT_URL");
    if (e) out->endpoint = sl__strdup(e);

    if (!out->region || (e && !out->endpoint) || (out->access_key && !out->source)) {
        sl__aws_free(out);
        return -ENOMEM;
    }
    return 0;
}

void sl__aws_free(struct sl_aws *a)
{
    if (!a) return;
    free(a->access_key);
    free(a->secret_key);
    free(a->session_token);
    free(a->region);
    free(a->endpoint);
    free(a->source);
    memset(a, 0, sizeof(*a));
}

/*
 * config.c - sluice.yaml: where it is found, what it may hold, and errors that say where.
 *
 * libyaml's document loader gives every node its start mark, so each error names the file,
 * line and column of the offending node and what was expected there. The schema is small and
 * written out as tables of known keys: an unknown key is an error that lists the known ones
 * (a typo in `metdata_ttl` must not silently mean "default").
 *
 *   cache:  { dir, size, memory, page_size }
 *   mounts: { NAMESPACE_PATH: URI | { uri, endpoint, region, policy, metadata_ttl,
 *                                     access_key, secret_key, concurrency, part_size,
 *                                     retries, retry_time, addressing } }
 *
 * Relative paths (cache.dir, a mount given as ./dir) are relative to the config file's folder.
 */
#include <ctype.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/core.h"
#include "core/yaml.h"

#define CONFIG_MAX_BYTES (4U << 20)

struct parse {
    const char *name;
    char *base_dir; /* folder of the config file, for relative paths */
    yaml_document_t doc;
    struct sl_config *cfg;
};

static int perr(struct parse *p, const yaml_node_t *n, const char *fmt, ...) SL_PRINTF(3, 4);
static int perr(struct parse *p, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return sl__err(SL_E_CONFIG, "%s:%zu:%zu: %s", p->name, n->start_mark.line + 1,
                   n->start_mark.column + 1, msg);
}

int sl__yaml_load(const char *name, const char *text, size_t len, yaml_document_t *doc)
{
    yaml_parser_t parser;
    int rc = 0;
    if (!yaml_parser_initialize(&parser)) return -ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, doc)) {
        /* Where it was noticed, and where the construct it concerns began (an unclosed '['
         * is noticed at the end of the file; the user needs the '['). */
        yaml_mark_t mk = parser.problem_mark, cm = parser.context_mark;
        char ctx[160] = "";
        if (parser.context)
            snprintf(ctx, sizeof(ctx), " (%s that starts at %zu:%zu)", parser.context,
                     cm.line + 1, cm.column + 1);
        rc = sl__err(SL_E_CONFIG, "%s:%zu:%zu: invalid YAML: %s%s", name, mk.line + 1,
                     mk.column + 1, parser.problem ? parser.problem : "cannot parse", ctx);
    }
    yaml_parser_delete(&parser);
    return rc;
}

const char *sl__policy_name(enum sl_policy pol)
{
    switch (pol) {
    case SL_POLICY_LRU:
        return "lru";
    case SL_POLICY_S3FIFO:
        return "s3fifo";
    case SL_POLICY_EPOCH:
        return "epoch";
    default:
        return "s3fifo";
    }
}

static char *expand_raw(struct parse *p, const char *s);

static int want_scalar(struct parse *p, const yaml_node_t *n, const char *key, const char *what,
                       const char **out)
{
    const char *s = sl__yaml_scalar(n);
    if (!s || !*s) return perr(p, n, "%s: expected %s, got %s", key, what, sl__yaml_kind(n));
    *out = s;
    return 0;
}

static int want_mapping(struct parse *p, const yaml_node_t *n, const char *key)
{
    if (n->type != YAML_MAPPING_NODE)
        return perr(p, n, "%s: expected a mapping of keys, got %s", key, sl__yaml_kind(n));
    return 0;
}

/* A key given twice is a mistake (which one did the user mean?), not "the last one wins". */
static int no_duplicate(struct parse *p, yaml_node_t *map, yaml_node_pair_t *pair,
                        const char *where)
{
    yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
    const char *key = sl__yaml_scalar(k);
    if (!key) return 0;
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
        yaml_node_t *qk = yaml_document_get_node(&p->doc, q->key);
        const char *other = sl__yaml_scalar(qk);
        if (other && strcmp(other, key) == 0)
            return perr(p, k, "%s%s'%s' is given twice (first at line %zu)", where,
                        *where ? ": " : "", key, qk->start_mark.line + 1);
    }
    return 0;
}

/* "~/x" -> $HOME/x; "x" -> BASE/x; "/x" stays; then normalised ("/a/./b/../c" -> "/a/c"). */
static char *expand_path(struct parse *p, const char *s)
{
    char *raw = expand_raw(p, s), *norm = NULL;
    if (!raw || sl__path_normalize(raw, &norm) < 0) return raw;
    free(raw);
    char *abs = sl__asprintf("/%s", norm);
    free(norm);
    return abs;
}

static char *expand_raw(struct parse *p, const char *s)
{
    if (s[0] == '~' && (s[1] == '/' || !s[1])) {
        const char *home = getenv("HOME");
        if (!home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : "/";
        }
        return sl__asprintf("%s%s", home, s + 1);
    }
    if (s[0] == '/' || !p->base_dir) return sl__strdup(s);
    return sl__asprintf("%s/%s", p->base_dir, s);
}

static int parse_size(struct parse *p, const yaml_node_t *n, const char *key, uint64_t *out)
{
    const char *s = NULL;
    int rc = want_scalar(p, n, key, "a size such as 20GiB", &s);
    if (rc) return rc;
    if (sl_parse_size(s, out) < 0)
        return perr(p, n, "%s: expected a size such as 512MiB or 20GiB (units B, KiB, MiB, GiB, "
                          "TiB, KB, MB, GB, TB), got '%s'", key, s);
    return 0;
}

static int parse_cache(struct parse *p, yaml_node_t *map)
{
    static const char *const known = "dir, size, memory, page_size";
    int rc = want_mapping(p, map, "cache");
    if (rc) return rc;

    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(&p->doc, pair->value);
        const char *key = sl__yaml_scalar(k);
        if (!key) return perr(p, k, "cache: expected a key (one of %s)", known);
        if ((rc = no_duplicate(p, map, pair, "cache"))) return rc;

        if (strcmp(key, "dir") == 0) {
            const char *s = NULL;
            if ((rc = want_scalar(p, v, "cache.dir", "a directory path", &s))) return rc;
            free(p->cfg->cache_dir);
            if (!(p->cfg->cache_dir = expand_path(p, s))) return -ENOMEM;
        } else if (strcmp(key, "size") == 0) {
            if ((rc = parse_size(p, v, "cache.size", &p->cfg->cache_size))) return rc;
            if (p->cfg->cache_size == 0)
                return perr(p, v, "cache.size: must be more than 0 (it is the disk tier's limit)");
        } else if (strcmp(key, "memory") == 0) {
            if ((rc = parse_size(p, v, "cache.memory", &p->cfg->cache_memory))) return rc;
        } else if (strcmp(key, "page_size") == 0) {
            uint64_t ps;
            if ((rc = parse_size(p, v, "cache.page_size", &ps))) return rc;
            if (ps < SL_MIN_PAGE_SIZE || ps > SL_MAX_PAGE_SIZE || (ps & (ps - 1)))
                return perr(p, v, "cache.page_size: expected a power of two from 4KiB to 64MiB, "
                                  "got '%s'", sl__yaml_scalar(v));
            p->cfg->page_size = (uint32_t)ps;
        } else {
            return perr(p, k, "cache: unknown key '%s' (expected one of %s)", key, known);
        }
    }
    return 0;
}

/* A namespace path as a mount point: absolute and already normal, so that the mount table never
 * has two spellings of one place. */
static int check_mount_path(struct parse *p, const yaml_node_t *k, const char *s)
{
    if (s[0] != '/')
        return perr(p, k, "mounts: '%s' is not a namespace path; mount points start with '/'", s);
    if (strcmp(s, "/") == 0) return 0;
    size_t len = strlen(s);
    if (s[len - 1] == '/' || strstr(s, "//") || strstr(s, "/./") || strstr(s, "/../") ||
        (len >= 2 && strcmp(s + len - 2, "/.") == 0) ||
        (len >= 3 && strcmp(s + len - 3, "/..") == 0))
        return perr(p, k, "mounts: '%s' is not a plain path; write it without '.', '..', "
                          "doubled or trailing '/'", s);
    return 0;
}

/* A mount's URI: scheme://rest; a plain path stands for file://PATH. */
static int parse_uri(struct parse *p, const yaml_node_t *n, const char *s, char **out)
{
    if (strstr(s, "://")) {
        const char *c = s;
        while (*c && (isalnum((unsigned char)*c) || *c == '+' || *c == '-' || *c == '.')) c++;
        if (c == s || strncmp(c, "://", 3) != 0)
            return perr(p, n, "mounts: '%s' is not a URI such as file:///data or s3://bucket/prefix",
                        s);
        *out = sl__strdup(s);
    } else if (s[0] == '/' || s[0] == '.' || s[0] == '~') {
        char *path = expand_path(p, s);
        if (!path) return -ENOMEM;
        *out = sl__asprintf("file://%s", path);
        free(path);
    } else {
        return perr(p, n, "mounts: '%s' is not a URI such as file:///data, s3://bucket/prefix or "
                          "https://host/path", s);
    }
    return *out ? 0 : -ENOMEM;
}

static int parse_mount(struct parse *p, yaml_node_t *k, yaml_node_t *v, struct sl_mount_cfg *m)
{
    static const char *const known =
        "uri, endpoint, region, policy, metadata_ttl, access_key, secret_key, concurrency, "
        "part_size, retries, retry_time, addressing";
    const char *path = sl__yaml_scalar(k);
    int rc;

    if (!path || !*path) return perr(p, k, "mounts: expected a namespace path such as /data");
    if ((rc = check_mount_path(p, k, path))) return rc;
    if (!(m->path = sl__strdup(path))) return -ENOMEM;
    m->metadata_ttl_ns = SL_TTL_DEFAULT;
    m->retries = -1;
    m->line = (unsigned)k->start_mark.line + 1;
    m->column = (unsigned)k->start_mark.column + 1;

    if (v->type == YAML_SCALAR_NODE) {
        const char *s = NULL;
        char ctx[320];
        snprintf(ctx, sizeof(ctx), "mounts: %s", path);
        if ((rc = want_scalar(p, v, ctx, "a URI", &s))) return rc;
        return parse_uri(p, v, s, &m->uri);
    }
    if (v->type != YAML_MAPPING_NODE)
        return perr(p, v, "mounts: %s: expected a URI or a mapping with 'uri:', got %s", path,
                    sl__yaml_kind(v));

    for (yaml_node_pair_t *pair = v->data.mapping.pairs.start; pair < v->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *ok = yaml_document_get_node(&p->doc, pair->key);
        yaml_node_t *ov = yaml_document_get_node(&p->doc, pair->value);
        const char *key = sl__yaml_scalar(ok), *s = NULL;
        char ctx[320];
        if (!key) return perr(p, ok, "mounts: %s: expected a key (one of %s)", path, known);
        snprintf(ctx, sizeof(ctx), "mounts: %s", path);
        if ((rc = no_duplicate(p, v, pair, ctx))) return rc;
        snprintf(ctx, sizeof(ctx), "mounts: %s: %s", path, key);

        if (strcmp(key, "uri") == 0) {
            if ((rc = want_scalar(p, ov, ctx, "a URI", &s))) return rc;
            free(m->uri);
            m->uri = NULL;
            if ((rc = parse_uri(p, ov, s, &m->uri))) return rc;
        } else if (strcmp(key, "endpoint") == 0 || strcmp(key, "region") == 0 ||
                   strcmp(key, "access_key") == 0 || strcmp(key, "secret_key") == 0) {
            char **field = key[0] == 'e' ? &m->endpoint
                           : key[0] == 'r' ? &m->region
                           : key[0] == 'a' ? &m->access_key
                                           : &m->secret_key;
            if ((rc = want_scalar(p, ov, ctx, "a value", &s))) return rc;
            free(*field);
            if (!(*field = sl__strdup(s))) return -ENOMEM;
        } else if (strcmp(key, "policy") == 0) {
            if ((rc = want_scalar(p, ov, ctx, "lru, s3fifo or epoch", &s))) return rc;
            if (strcmp(s, "lru") == 0)
                m->policy = SL_POLICY_LRU;
            else if (strcmp(s, "s3fifo") == 0)
                m->policy = SL_POLICY_S3FIFO;
            else if (strcmp(s, "epoch") == 0)
                m->policy = SL_POLICY_EPOCH;
            else
                return perr(p, ov, "%s: expected lru, s3fifo or epoch, got '%s'", ctx, s);
        } else if (strcmp(key, "metadata_ttl") == 0) {
            if ((rc = want_scalar(p, ov, ctx, "a duration", &s))) return rc;
            if (sl_parse_duration(s, &m->metadata_ttl_ns) < 0)
                return perr(p, ov, "%s: expected a duration such as 30s, 10m or 1h (0: always "
                                   "revalidate, -1: immutable), got '%s'", ctx, s);
        } else if (strcmp(key, "concurrency") == 0 || strcmp(key, "retries") == 0) {
            char *end;
            bool conc = key[0] == 'c';
            if ((rc = want_scalar(p, ov, ctx, "a number", &s))) return rc;
            errno = 0;
            long n = strtol(s, &end, 10);
            if (errno || *end || n < (conc ? 1 : 0) || n > (conc ? 1024 : 100))
                return perr(p, ov, "%s: expected a whole number from %d to %d, got '%s'", ctx,
                            conc ? 1 : 0, conc ? 1024 : 100, s);
            if (conc)
                m->concurrency = (unsigned)n;
            else
                m->retries = (int)n;
        } else if (strcmp(key, "part_size") == 0) {
            if ((rc = parse_size(p, ov, ctx, &m->part_size))) return rc;
            /* S3's own bounds: parts of 5 MiB to 5 GiB (the last may be smaller). */
            if (m->part_size < (5ULL << 20) || m->part_size > (5ULL << 30))
                return perr(p, ov, "%s: expected a size from 5MiB to 5GiB (S3's limits for a "
                                   "part), got '%s'", ctx, sl__yaml_scalar(ov));
        } else if (strcmp(key, "retry_time") == 0) {
            if ((rc = want_scalar(p, ov, ctx, "a duration", &s))) return rc;
            if (sl_parse_duration(s, &m->retry_time_ns) < 0 || m->retry_time_ns <= 0)
                return perr(p, ov, "%s: expected a duration such as 500ms, 30s or 2m, got '%s'",
                            ctx, s);
        } else if (strcmp(key, "addressing") == 0) {
            if ((rc = want_scalar(p, ov, ctx, "path or virtual", &s))) return rc;
            if (strcmp(s, "path") == 0)
                m->addressing = SL_ADDR_PATH;
            else if (strcmp(s, "virtual") == 0)
                m->addressing = SL_ADDR_VIRTUAL;
            else if (strcmp(s, "auto") == 0)
                m->addressing = SL_ADDR_AUTO;
            else
                return perr(p, ov, "%s: expected path, virtual or auto, got '%s'", ctx, s);
        } else {
            return perr(p, ok, "mounts: %s: unknown key '%s' (expected one of %s)", path, key,
                        known);
        }
    }
    if (!m->uri) return perr(p, v, "mounts: %s: missing 'uri:' (where the data lives)", path);
    return 0;
}

static int parse_mounts(struct parse *p, yaml_node_t *map)
{
    int rc = want_mapping(p, map, "mounts");
    if (rc) return rc;
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    p->cfg->mounts = calloc(n ? n : 1, sizeof(struct sl_mount_cfg));
    if (!p->cfg->mounts) return -ENOMEM;

    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(&p->doc, pair->value);
        struct sl_mount_cfg *m = &p->cfg->mounts[p->cfg->nmounts++];
        if ((rc = parse_mount(p, k, v, m))) return rc;
        for (size_t i = 0; i + 1 < p->cfg->nmounts; i++)
            if (strcmp(p->cfg->mounts[i].path, m->path) == 0)
                return perr(p, k, "mounts: %s is mounted twice (first at line %u)", m->path,
                            p->cfg->mounts[i].line);
    }
    return 0;
}

static int parse_root(struct parse *p)
{
    static const char *const known = "cache, mounts";
    yaml_node_t *root = yaml_document_get_root_node(&p->doc);
    int rc;

    if (!root) return 0; /* an empty file: defaults */
    if (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0) return 0;
    if (root->type != YAML_MAPPING_NODE)
        return perr(p, root, "expected a mapping with keys %s, got %s", known, sl__yaml_kind(root));

    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
         pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(&p->doc, pair->value);
        const char *key = sl__yaml_scalar(k);
        if (!key) return perr(p, k, "expected a key (one of %s)", known);
        if ((rc = no_duplicate(p, root, pair, ""))) return rc;
        if (strcmp(key, "cache") == 0)
            rc = parse_cache(p, v);
        else if (strcmp(key, "mounts") == 0)
            rc = v->type == YAML_SCALAR_NODE && !v->data.scalar.length ? 0 : parse_mounts(p, v);
        else
            rc = perr(p, k, "unknown key '%s' (expected one of %s)", key, known);
        if (rc) return rc;
    }
    return 0;
}

int sl__config_defaults(struct sl_config **out)
{
    struct sl_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) return -ENOMEM;
    cfg->cache_size = SL_DEFAULT_CACHE_SIZE;
    cfg->cache_memory = SL_DEFAULT_CACHE_MEMORY;
    cfg->page_size = SL_DEFAULT_PAGE_SIZE;

    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        cfg->cache_dir = sl__asprintf("%s/sluice", xdg);
    else if (home && *home)
        cfg->cache_dir = sl__asprintf("%s/.cache/sluice", home);
    else {
        struct passwd *pw = getpwuid(getuid());
        cfg->cache_dir = sl__asprintf("%s/.cache/sluice", pw ? pw->pw_dir : "/tmp");
    }
    if (!cfg->cache_dir) {
        free(cfg);
        return -ENOMEM;
    }
    *out = cfg;
    return 0;
}

int sl__config_parse(const char *name, const char *text, size_t len, struct sl_config **out)
{
    struct parse p = {.name = name};
    bool have_doc = false;
    int rc;

    if ((rc = sl__config_defaults(&p.cfg)) < 0) return rc;
    /* Relative paths in the file are relative to its folder, made absolute here. */
    const char *slash = strrchr(name, '/');
    char *cwd = name[0] == '/' ? NULL : getcwd(NULL, 0);
    if (!slash)
        p.base_dir = cwd ? sl__strdup(cwd) : NULL;
    else if (name[0] == '/')
        p.base_dir = strndup(name, (size_t)(slash - name) ? (size_t)(slash - name) : 1);
    else if (cwd)
        p.base_dir = sl__asprintf("%s/%.*s", cwd, (int)(slash - name), name);
    free(cwd);

    if ((rc = sl__yaml_load(name, text, len, &p.doc)) < 0) goto out;
    have_doc = true;
    rc = parse_root(&p);
    if (rc == 0) {
        *out = p.cfg;
        p.cfg = NULL;
        if (!((*out)->file = sl__strdup(name))) rc = -ENOMEM;
    }
out:
    if (have_doc) yaml_document_delete(&p.doc);
    free(p.base_dir);
    sl__config_free(p.cfg);
    return rc;
}

static int load_file(const char *path, struct sl_config **out)
{
    FILE *f = fopen(path, "re");
    char *text = NULL;
    size_t len = 0;
    int rc = 0;

    /* A config file that was named but cannot be read is a config error (exit 2), not a
     * failure of the command. */
    if (!f) return sl__err(SL_E_CONFIG, "config %s: %s", path, strerror(errno));
    text = malloc(CONFIG_MAX_BYTES + 1);
    if (!text) {
        fclose(f);
        return -ENOMEM;
    }
    len = fread(text, 1, CONFIG_MAX_BYTES + 1, f);
    if (ferror(f))
        rc = sl__err(-EIO, "config %s: read failed", path);
    else if (len > CONFIG_MAX_BYTES)
        rc = sl__err(SL_E_CONFIG, "config %s: larger than %u MiB; is it the right file?", path,
                     CONFIG_MAX_BYTES >> 20);
    fclose(f);
    if (rc == 0) {
        /* Relative paths in the file are relative to its folder, so name it absolutely. */
        char *abs = realpath(path, NULL);
        rc = sl__config_parse(abs ? abs : path, text, len, out);
        free(abs);
    }
    free(text);
    return rc;
}

int sl__config_load(const char *path, struct sl_config **out)
{
    if (path) return load_file(path, out);

    const char *env = getenv("SLUICE_CONFIG");
    if (env && *env) return load_file(env, out);

    if (access("sluice.yaml", F_OK) == 0) return load_file("sluice.yaml", out);

    char *xdg_path;
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        xdg_path = sl__asprintf("%s/sluice/sluice.yaml", xdg);
    else
        xdg_path = sl__asprintf("%s/.config/sluice/sluice.yaml", home && *home ? home : "/");
    if (!xdg_path) return -ENOMEM;
    int rc = access(xdg_path, F_OK) == 0 ? load_file(xdg_path, out) : sl__config_defaults(out);
    free(xdg_path);
    return rc;
}

void sl__config_free(struct sl_config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->nmounts; i++) {
        struct sl_mount_cfg *m = &cfg->mounts[i];
        free(m->path);
        free(m->uri);
        free(m->endpoint);
        free(m->region);
        free(m->access_key);
        free(m->secret_key);
    }
    free(cfg->mounts);
    free(cfg->cache_dir);
    free(cfg->file);
    free(cfg);
}

/*
 * file.c - pipeline.yaml: what a user writes, read into struct sl_pipeline with every check
 * done here, so that nothing later (the DAG, the hashes, the run) meets a value it must doubt.
 *
 * As in config.c, libyaml's document loader gives every node its start mark, and every error
 * names FILE:LINE:COL of the node it is about and says what was expected there. The schema is
 * tables of known keys: an unknown key is an error listing them (`retires: 3` must not quietly
 * mean "no retries"), and a key given twice is an error (which one did the user mean?).
 *
 *   executor: local | slurm
 *   resources: {cpus, mem, gpus}          run-wide limits
 *   slurm: {partition}
 *   params: FILE                          default params.yaml, read only when a stage names keys
 *   stages: {NAME: {cmd, deps, outs, params, resources, retries, retry_delay, timeout, env,
 *                   after, foreach}}
 *
 * A stage is read in two steps. First its template: the nodes of its keys, and everything that
 * is the same for each copy (resources, retries, durations, params, the foreach items). Then one
 * struct sl_stage per copy (one for a stage without foreach), with ${...} substituted in cmd,
 * deps, outs, env values and after. Substitution replaces only what this file defines (${item},
 * ${item.KEY}, the stage's params); any other ${...} is the shell's and passes through as
 * written, and $${ is a literal ${.
 *
 * Invariants of a pipeline handed out: stage names are unique and match [A-Za-z0-9_.-]+ (a
 * copy adds @SUFFIX); cmd is non-empty; params and env are sorted by key with unique keys
 * (they are part of a stage's cache key, where order must not matter); every value a params
 * key names is compact JSON. Nothing here touches the file system except to read the pipeline
 * and its params file: whether deps exist is the DAG's question (dag.c).
 */
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "core/core.h"
#include "core/yaml.h"
#include "pipeline/pipeline.h"

#define PIPELINE_MAX_BYTES (16U << 20)
/* A matrix is a product: three keys of a hundred values are a million stages, surely a typo. */
#define MAX_COPIES 100000U
/* A params value is rendered as JSON; YAML aliases can make a small file a huge (or, with an
 * anchor inside itself, endless) tree, so depth and size are bounded. */
#define JSON_MAX_DEPTH 64
#define JSON_MAX_BYTES (1U << 20)
#define MAX_COUNT 100000U  /* cpus, gpus */
#define MAX_RETRIES 1000U

static const char *const top_known = "executor, resources, slurm, params, stages";
static const char *const stage_known = "cmd, deps, outs, params, resources, retries, retry_delay, "
                                       "timeout, env, after, foreach";
static const char *const res_known = "cpus, mem, gpus";

struct parse {
    const char *name; /* the pipeline file, as errors call it */
    struct sl_pipeline *p;
    yaml_document_t doc;
    const char *params_file; /* `params:` at the top, borrowed from doc; NULL: params.yaml */
    char *params_path;       /* params_file joined to p->dir, once it is needed */
    bool params_loaded;      /* pdoc holds the params file */
    yaml_document_t pdoc;
};

/* A params key of a stage, with the text that ${KEY} stands for. */
struct param {
    struct sl_pipe_kv kv;
    char *text;
};

/* One stage as written: what every copy shares. Nodes are borrowed from the document. */
struct tmpl {
    const char *group;
    char ctx[320];   /* 'stage "NAME": ', the prefix of its errors */
    char where[320]; /* ' in stage "NAME"', for unknown keys */
    yaml_node_t *key, *cmd, *deps, *outs, *params, *resources, *retries, *retry_delay, *timeout,
        *env, *after, *foreach;
    yaml_node_t **dep_n, **out_n, **after_n;
    size_t ndep, nout, nafter;
    yaml_node_pair_t *env_pairs;
    size_t nenv;
    struct param *par;
    size_t npar;
    struct sl_resources res;
    unsigned nretries;
    int64_t retry_delay_ns, timeout_ns;
    /* foreach: a list is one unnamed key; a matrix has nkeys named ones. */
    bool has_foreach, matrix;
    size_t nkeys, ncopies;
    const char **fkeys;
    yaml_node_t **flists; /* the sequence of each key */
};

/* The copy being made: the item of each foreach key. */
struct copy {
    const char **vals;
    char *joined; /* the values joined by '-', as written: ${item} of a matrix */
};

/* ---- errors ------------------------------------------------------------------------------- */

static int err_at(const char *file, yaml_mark_t m, const char *fmt, ...) SL_PRINTF(3, 4);
static int err_at(const char *file, yaml_mark_t m, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return sl__err(SL_E_CONFIG, "%s:%zu:%zu: %s", file, m.line + 1, m.column + 1, msg);
}

static int perr(struct parse *ps, const yaml_node_t *n, const char *fmt, ...) SL_PRINTF(3, 4);
static int perr(struct parse *ps, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_at(ps->name, n->start_mark, "%s", msg);
}

static struct sl_mark mark_of(const yaml_node_t *n)
{
    return (struct sl_mark){.line = n->start_mark.line + 1, .col = n->start_mark.column + 1};
}

/* ---- nodes -------------------------------------------------------------------------------- */

/* `deps:` with nothing after it: YAML's null, taken as "none" rather than as an error. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = sl__yaml_scalar(n);
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0;
}

static yaml_node_t *node(yaml_document_t *doc, int id)
{
    return yaml_document_get_node(doc, id);
}

static size_t npairs(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

struct key_at {
    const char *key;
    size_t pos;
    const yaml_node_t *n;
};

static int cmp_key_at(const void *a, const void *b)
{
    const struct key_at *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* A key given twice is a mistake, not "the last one wins". Sorted rather than compared pair
 * by pair: a stages mapping may have ten thousand keys. Reports the first repeat in file
 * order. */
static int check_dups(struct parse *ps, yaml_node_t *map, const char *ctx, const char *what)
{
    size_t n = npairs(map), m = 0;
    int rc = 0;
    if (n < 2) return 0;
    struct key_at *keys = malloc(n * sizeof(*keys));
    if (!keys) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *k = node(&ps->doc, map->data.mapping.pairs.start[i].key);
        if (sl__yaml_scalar(k)) keys[m++] = (struct key_at){sl__yaml_scalar(k), i, k};
    }
    qsort(keys, m, sizeof(*keys), cmp_key_at);
    const struct key_at *second = NULL, *first = NULL;
    for (size_t i = 1; i < m; i++) {
        if (strcmp(keys[i].key, keys[i - 1].key) != 0) continue;
        /* keys[i - 1] is the first of its run only where the run starts there. */
        if (i >= 2 && strcmp(keys[i - 2].key, keys[i].key) == 0) continue;
        if (!second || keys[i].pos < second->pos) {
            second = &keys[i];
            first = &keys[i - 1];
        }
    }
    if (second)
        rc = perr(ps, second->n, "%s%s \"%s\" is given twice (first at line %zu)", ctx, what,
                  second->key, first->n->start_mark.line + 1);
    free(keys);
    return rc;
}

/* A scalar with text, for keys whose value is one string. */
static int want_string(struct parse *ps, const yaml_node_t *n, const char *ctx, const char *key,
                       const char *what, const char **out)
{
    const char *s = sl__yaml_scalar(n);
    if (!s || !*s)
        return perr(ps, n, "%s%s: expected %s, got %s", ctx, key, what, sl__yaml_kind(n));
    *out = s;
    return 0;
}

/* A list of non-empty strings, or one string; nothing is an empty list. The nodes are kept
 * (borrowed) so that each copy substitutes into them with their marks. */
static int want_strings(struct parse *ps, yaml_node_t *n, const char *ctx, const char *key,
                        const char *what, yaml_node_t ***out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (is_null(n)) return 0;
    if (n->type == YAML_SCALAR_NODE) {
        if (!n->data.scalar.length) return perr(ps, n, "%s%s: expected %s", ctx, key, what);
        if (!(*out = malloc(sizeof(**out)))) return -ENOMEM;
        (*out)[0] = n;
        *count = 1;
        return 0;
    }
    if (n->type != YAML_SEQUENCE_NODE)
        return perr(ps, n, "%s%s: expected a list of %s, got %s", ctx, key, what, sl__yaml_kind(n));
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (len == 0) return 0;
    if (!(*out = malloc(len * sizeof(**out)))) return -ENOMEM;
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *it = node(&ps->doc, n->data.sequence.items.start[i]);
        const char *s = sl__yaml_scalar(it);
        if (!s || !*s)
            return perr(ps, it, "%s%s: expected %s, got %s", ctx, key, what, sl__yaml_kind(it));
        (*out)[(*count)++] = it;
    }
    return 0;
}

/* A whole number in [min, max], digits only: "2.5", "-1", "0x10" and "2 " are refused. */
static int want_count(struct parse *ps, const yaml_node_t *n, const char *ctx, const char *key,
                      unsigned min, unsigned max, unsigned *out)
{
    const char *s = sl__yaml_scalar(n);
    unsigned long long v = 0;
    bool ok = s && *s && strlen(s) <= 9;
    for (const char *c = s; ok && *c; c++) ok = isdigit((unsigned char)*c);
    if (ok) v = strtoull(s, NULL, 10);
    if (!ok || v < min || v > max) {
        if (s)
            return perr(ps, n, "%s%s: expected a whole number from %u to %u, got \"%s\"", ctx, key,
                        min, max, s);
        return perr(ps, n, "%s%s: expected a whole number from %u to %u, got %s", ctx, key, min,
                    max, sl__yaml_kind(n));
    }
    *out = (unsigned)v;
    return 0;
}

static int want_size(struct parse *ps, const yaml_node_t *n, const char *ctx, const char *key,
                     uint64_t *out)
{
    const char *s = sl__yaml_scalar(n);
    if (!s) return perr(ps, n, "%s%s: expected a size (examples: 512MiB, 2GiB), got %s", ctx, key,
                        sl__yaml_kind(n));
    if (sl_parse_size(s, out) < 0)
        return perr(ps, n, "%s%s: \"%s\" is not a size (examples: 512MiB, 2GiB)", ctx, key, s);
    return 0;
}

static int want_duration(struct parse *ps, const yaml_node_t *n, const char *ctx, const char *key,
                         const char *zero, int64_t *out)
{
    const char *s = sl__yaml_scalar(n);
    if (!s)
        return perr(ps, n, "%s%s: expected a duration (examples: 30s, 10m, 2h), got %s", ctx, key,
                    sl__yaml_kind(n));
    if (sl_parse_duration(s, out) < 0)
        return perr(ps, n, "%s%s: \"%s\" is not a duration (examples: 30s, 10m, 2h)", ctx, key, s);
    /* sl_parse_duration reads -1 as "forever", which means nothing for a delay or a limit. */
    if (*out < 0)
        return perr(ps, n, "%s%s: \"%s\" is not a duration (examples: 30s, 10m, 2h; %s)", ctx,
                    key, s, zero);
    return 0;
}

/* ---- reading files ------------------------------------------------------------------------ */

/* The whole file, up to max bytes: -errno (nothing recorded) or SL_E_CONFIG when larger. */
static int read_text(const char *path, size_t max, char **text, size_t *len)
{
    FILE *f = fopen(path, "re");
    int rc = 0;
    if (!f) return -errno;
    char *buf = malloc(max + 1);
    if (!buf) {
        fclose(f);
        return -ENOMEM;
    }
    size_t n = fread(buf, 1, max + 1, f);
    if (ferror(f))
        rc = -EIO;
    else if (n > max)
        rc = sl__err(SL_E_CONFIG, "%s: larger than %zu MiB; is it the right file?", path,
                     max >> 20);
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

/* ---- params values as JSON ---------------------------------------------------------------- */

static int json_string(struct sl_buf *b, const char *s)
{
    int rc = sl__buf_append(b, "\"", 1);
    for (const char *c = s; rc == 0 && *c; c++) {
        unsigned char ch = (unsigned char)*c;
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            rc = sl__buf_append(b, esc, 2);
        } else if (ch == '\n') {
            rc = sl__buf_append(b, "\\n", 2);
        } else if (ch == '\t') {
            rc = sl__buf_append(b, "\\t", 2);
        } else if (ch == '\r') {
            rc = sl__buf_append(b, "\\r", 2);
        } else if (ch < 0x20) {
            rc = sl__buf_printf(b, "\\u%04x", ch);
        } else {
            rc = sl__buf_append(b, c, 1);
        }
    }
    return rc ? rc : sl__buf_append(b, "\"", 1);
}

/* A YAML 1.2 number (core schema: [-+]? digits, optional fraction, optional exponent; ".5" and
 * "1." too) in JSON's spelling: no '+', no leading zeros, a digit either side of the point.
 * false when s is not such a number (0x1F, .inf, 1_000 stay strings). */
static bool json_number(const char *s, struct sl_buf *b)
{
    const char *c = s, *int_start, *int_end, *frac_start = NULL, *frac_end = NULL, *exp = NULL;
    bool neg = false;
    if (*c == '-' || *c == '+') neg = *c++ == '-';
    int_start = c;
    while (isdigit((unsigned char)*c)) c++;
    int_end = c;
    if (*c == '.') {
        frac_start = ++c;
        while (isdigit((unsigned char)*c)) c++;
        frac_end = c;
    }
    if (int_end == int_start && (!frac_start || frac_end == frac_start)) return false;
    if (*c == 'e' || *c == 'E') {
        exp = c++;
        if (*c == '-' || *c == '+') c++;
        if (!isdigit((unsigned char)*c)) return false;
        while (isdigit((unsigned char)*c)) c++;
    }
    if (*c) return false;
    while (int_start + 1 < int_end && *int_start == '0') int_start++;
    int rc = neg ? sl__buf_append(b, "-", 1) : 0;
    if (!rc && int_end > int_start)
        rc = sl__buf_append(b, int_start, (size_t)(int_end - int_start));
    else if (!rc)
        rc = sl__buf_append(b, "0", 1);
    if (!rc && frac_start) {
        rc = sl__buf_append(b, ".", 1);
        if (!rc && frac_end > frac_start)
            rc = sl__buf_append(b, frac_start, (size_t)(frac_end - frac_start));
        else if (!rc)
            rc = sl__buf_append(b, "0", 1);
    }
    if (!rc && exp) rc = sl__buf_append(b, exp, strlen(exp));
    return rc == 0;
}

/* A scalar as JSON: quoted in the file, a string; plain, null, a bool or a number when it reads
 * as one (YAML 1.2's core schema: yes/no are strings), else a string. */
static int json_scalar(const yaml_node_t *n, struct sl_buf *b)
{
    const char *s = sl__yaml_scalar(n);
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (!*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
            strcmp(s, "NULL") == 0)
            return sl__buf_append(b, "null", 4);
        if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
            return sl__buf_append(b, "true", 4);
        if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
            return sl__buf_append(b, "false", 5);
        size_t before = b->len;
        if (json_number(s, b)) return 0;
        b->len = before;
        if (b->data) b->data[before] = '\0';
    }
    return json_string(b, s);
}

static int json_node(const char *file, yaml_document_t *doc, yaml_node_t *n, int depth,
                     struct sl_buf *b)
{
    int rc = 0;
    if (depth > JSON_MAX_DEPTH)
        return err_at(file, n->start_mark, "nested more than %d levels deep", JSON_MAX_DEPTH);
    if (b->len > JSON_MAX_BYTES)
        return err_at(file, n->start_mark, "a params value larger than %u MiB as JSON",
                      JSON_MAX_BYTES >> 20);
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return json_scalar(n, b);
    case YAML_SEQUENCE_NODE:
        rc = sl__buf_append(b, "[", 1);
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             rc == 0 && it < n->data.sequence.items.top; it++) {
            if (it > n->data.sequence.items.start) rc = sl__buf_append(b, ",", 1);
            if (rc == 0) rc = json_node(file, doc, node(doc, *it), depth + 1, b);
        }
        return rc ? rc : sl__buf_append(b, "]", 1);
    case YAML_MAPPING_NODE:
        rc = sl__buf_append(b, "{", 1);
        for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
             rc == 0 && pr < n->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = node(doc, pr->key);
            if (!sl__yaml_scalar(k))
                return err_at(file, k->start_mark, "a params key must be a value, not %s",
                              sl__yaml_kind(k));
            if (pr > n->data.mapping.pairs.start) rc = sl__buf_append(b, ",", 1);
            if (rc == 0) rc = json_string(b, sl__yaml_scalar(k));
            if (rc == 0) rc = sl__buf_append(b, ":", 1);
            if (rc == 0) rc = json_node(file, doc, node(doc, pr->value), depth + 1, b);
        }
        return rc ? rc : sl__buf_append(b, "}", 1);
    default:
        return sl__buf_append(b, "null", 4);
    }
}

/* value (JSON) and text (what ${KEY} becomes: a scalar as written, else the JSON). */
static int render_param(const char *file, yaml_document_t *doc, yaml_node_t *v,
                        struct param *out)
{
    struct sl_buf b = {0};
    int rc = json_node(file, doc, v, 0, &b);
    if (rc == 0 && !b.data) rc = sl__buf_append(&b, "", 0);
    if (rc) {
        sl__buf_free(&b);
        return rc;
    }
    out->kv.value = b.data;
    out->text = sl__strdup(sl__yaml_scalar(v) ? sl__yaml_scalar(v) : b.data);
    return out->text ? 0 : -ENOMEM;
}

/* ---- the params file ---------------------------------------------------------------------- */

static int load_params(struct parse *ps, struct tmpl *t, const yaml_node_t *first_key)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    if (ps->params_loaded) return 0;
    const char *f = ps->params_file ? ps->params_file : "params.yaml";
    if (!ps->params_path) {
        ps->params_path = f[0] == '/' ? sl__strdup(f) : sl__asprintf("%s/%s", ps->p->dir, f);
        if (!ps->params_path) return -ENOMEM;
    }
    rc = read_text(ps->params_path, PIPELINE_MAX_BYTES, &text, &len);
    if (rc == -ENOENT)
        return perr(ps, first_key, "%sparams file \"%s\" does not exist (the stage names keys of "
                                   "it)", t->ctx, ps->params_path);
    if (rc == SL_E_CONFIG) return rc;
    if (rc)
        return perr(ps, first_key, "%sparams file \"%s\" cannot be read: %s", t->ctx,
                    ps->params_path, strerror(-rc));
    rc = sl__yaml_load(ps->params_path, text, len, &ps->pdoc);
    free(text);
    if (rc) return rc;
    ps->params_loaded = true;
    yaml_node_t *root = yaml_document_get_root_node(&ps->pdoc);
    if (root && !is_null(root) && root->type != YAML_MAPPING_NODE)
        return err_at(ps->params_path, root->start_mark,
                      "expected a mapping of params (name: value), got %s", sl__yaml_kind(root));
    return 0;
}

/* The value at a dotted key: "train.lr" is lr in the mapping train. A key that itself holds a
 * dot ("a.b": 1) is found too: each level tries the whole rest first. */
static yaml_node_t *params_lookup(yaml_document_t *doc, yaml_node_t *map, const char *key,
                                  size_t len)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        const char *k = sl__yaml_scalar(node(doc, pr->key));
        if (k && strlen(k) == len && memcmp(k, key, len) == 0) return node(doc, pr->value);
    }
    for (size_t i = 0; i < len; i++) {
        if (key[i] != '.') continue;
        for (yaml_node_pair_t *pr = map->data.mapping.pairs.start;
             pr < map->data.mapping.pairs.top; pr++) {
            const char *k = sl__yaml_scalar(node(doc, pr->key));
            if (k && strlen(k) == i && memcmp(k, key, i) == 0) {
                yaml_node_t *v =
                    params_lookup(doc, node(doc, pr->value), key + i + 1, len - i - 1);
                if (v) return v;
            }
        }
    }
    return NULL;
}

static int cmp_param(const void *a, const void *b)
{
    return strcmp(((const struct param *)a)->kv.key, ((const struct param *)b)->kv.key);
}

static int parse_params(struct parse *ps, struct tmpl *t)
{
    yaml_node_t *n = t->params;
    int rc;
    if (is_null(n)) return 0;
    if (n->type == YAML_SCALAR_NODE || n->type == YAML_SEQUENCE_NODE) {
        /* Keys of the params file. */
        yaml_node_t **keys = NULL;
        size_t nkeys = 0;
        if ((rc = want_strings(ps, n, t->ctx, "params", "keys of the params file", &keys,
                               &nkeys)))
            goto list_out;
        if (nkeys == 0) goto list_out;
        if (!(t->par = calloc(nkeys, sizeof(*t->par)))) {
            rc = -ENOMEM;
            goto list_out;
        }
        if ((rc = load_params(ps, t, keys[0]))) goto list_out;
        yaml_node_t *root = yaml_document_get_root_node(&ps->pdoc);
        for (size_t i = 0; i < nkeys; i++) {
            const char *key = sl__yaml_scalar(keys[i]);
            for (size_t j = 0; j < i; j++)
                if (strcmp(sl__yaml_scalar(keys[j]), key) == 0) {
                    rc = perr(ps, keys[i], "%sparams: \"%s\" is given twice (first at line %zu)",
                              t->ctx, key, keys[j]->start_mark.line + 1);
                    goto list_out;
                }
            yaml_node_t *v = params_lookup(&ps->pdoc, root, key, strlen(key));
            if (!v) {
                rc = perr(ps, keys[i], "%sparams key \"%s\" is not in %s", t->ctx, key,
                          ps->params_path);
                goto list_out;
            }
            struct param *pa = &t->par[t->npar++];
            pa->kv.at = mark_of(keys[i]);
            if (!(pa->kv.key = sl__strdup(key))) {
                rc = -ENOMEM;
                goto list_out;
            }
            if ((rc = render_param(ps->params_path, &ps->pdoc, v, pa))) goto list_out;
        }
    list_out:
        free(keys);
        if (rc) return rc;
    } else {
        /* Values given here: name: value. */
        size_t np = npairs(n);
        if ((rc = check_dups(ps, n, t->ctx, "params key"))) return rc;
        if (np && !(t->par = calloc(np, sizeof(*t->par)))) return -ENOMEM;
        for (size_t i = 0; i < np; i++) {
            yaml_node_t *k = node(&ps->doc, n->data.mapping.pairs.start[i].key);
            yaml_node_t *v = node(&ps->doc, n->data.mapping.pairs.start[i].value);
            if (!sl__yaml_scalar(k) || !*sl__yaml_scalar(k))
                return perr(ps, k, "%sparams: expected a name, got %s", t->ctx, sl__yaml_kind(k));
            struct param *pa = &t->par[t->npar++];
            pa->kv.at = mark_of(k);
            if (!(pa->kv.key = sl__strdup(sl__yaml_scalar(k)))) return -ENOMEM;
            if ((rc = render_param(ps->name, &ps->doc, v, pa))) return rc;
        }
    }
    if (t->npar > 1) qsort(t->par, t->npar, sizeof(*t->par), cmp_param);
    return 0;
}

/* ---- resources and foreach ---------------------------------------------------------------- */

static int parse_resources(struct parse *ps, yaml_node_t *n, const char *ctx, const char *where,
                           struct sl_resources *res, bool *has_cpus, bool *has_mem,
                           bool *has_gpus)
{
    int rc;
    if (is_null(n)) return 0;
    if (n->type != YAML_MAPPING_NODE)
        return perr(ps, n, "%sresources: expected a mapping with keys %s, got %s", ctx, res_known,
                    sl__yaml_kind(n));
    if ((rc = check_dups(ps, n, ctx, "resources key"))) return rc;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = node(&ps->doc, pr->key), *v = node(&ps->doc, pr->value);
        const char *key = sl__yaml_scalar(k);
        if (key && strcmp(key, "cpus") == 0) {
            if ((rc = want_count(ps, v, ctx, "resources.cpus", 1, MAX_COUNT, &res->cpus)))
                return rc;
            if (has_cpus) *has_cpus = true;
        } else if (key && strcmp(key, "gpus") == 0) {
            if ((rc = want_count(ps, v, ctx, "resources.gpus", 0, MAX_COUNT, &res->gpus)))
                return rc;
            if (has_gpus) *has_gpus = true;
        } else if (key && strcmp(key, "mem") == 0) {
            if ((rc = want_size(ps, v, ctx, "resources.mem", &res->mem))) return rc;
            if (has_mem) *has_mem = true;
        } else if (key) {
            return perr(ps, k, "unknown key \"%s\" in resources%s (known: %s)", key, where,
                        res_known);
        } else {
            return perr(ps, k, "%sresources: expected a key (one of %s), got %s", ctx, res_known,
                        sl__yaml_kind(k));
        }
    }
    return 0;
}

static int foreach_items(struct parse *ps, struct tmpl *t, yaml_node_t *seq, const char *key)
{
    size_t len = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    char what[200];
    snprintf(what, sizeof(what), "foreach%s%s", key ? "." : "", key ? key : "");
    if (len == 0) return perr(ps, seq, "%s%s: expected at least one item", t->ctx, what);
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *it = node(&ps->doc, seq->data.sequence.items.start[i]);
        if (!sl__yaml_scalar(it))
            return perr(ps, it, "%s%s: expected an item (a value), got %s", t->ctx, what,
                        sl__yaml_kind(it));
        if (!*sl__yaml_scalar(it)) return perr(ps, it, "%s%s: an empty item", t->ctx, what);
    }
    if (t->ncopies > MAX_COPIES / len)
        return perr(ps, t->foreach, "%sforeach: more than %u copies", t->ctx, MAX_COPIES);
    t->ncopies *= len;
    return 0;
}

static int parse_foreach(struct parse *ps, struct tmpl *t)
{
    yaml_node_t *n = t->foreach;
    int rc;
    t->has_foreach = true;
    t->ncopies = 1;
    if (n->type == YAML_SEQUENCE_NODE) {
        t->nkeys = 1;
        if (!(t->flists = malloc(sizeof(*t->flists)))) return -ENOMEM;
        t->flists[0] = n;
        return foreach_items(ps, t, n, NULL);
    }
    if (n->type != YAML_MAPPING_NODE)
        return perr(ps, n, "%sforeach: expected a list of items or a mapping of lists (a "
                           "matrix), got %s", t->ctx, sl__yaml_kind(n));
    t->matrix = true;
    size_t np = npairs(n);
    if (np == 0) return perr(ps, n, "%sforeach: expected at least one key", t->ctx);
    if ((rc = check_dups(ps, n, t->ctx, "foreach key"))) return rc;
    t->fkeys = calloc(np, sizeof(*t->fkeys));
    t->flists = calloc(np, sizeof(*t->flists));
    if (!t->fkeys || !t->flists) return -ENOMEM;
    for (size_t i = 0; i < np; i++) {
        yaml_node_t *k = node(&ps->doc, n->data.mapping.pairs.start[i].key);
        yaml_node_t *v = node(&ps->doc, n->data.mapping.pairs.start[i].value);
        if (!sl__yaml_scalar(k) || !*sl__yaml_scalar(k))
            return perr(ps, k, "%sforeach: expected a name, got %s", t->ctx, sl__yaml_kind(k));
        if (v->type != YAML_SEQUENCE_NODE)
            return perr(ps, v, "%sforeach.%s: expected a list of values, got %s", t->ctx,
                        sl__yaml_scalar(k), sl__yaml_kind(v));
        t->fkeys[t->nkeys] = sl__yaml_scalar(k);
        t->flists[t->nkeys++] = v;
        if ((rc = foreach_items(ps, t, v, sl__yaml_scalar(k)))) return rc;
    }
    return 0;
}

/* ---- substitution ------------------------------------------------------------------------- */

static const struct param *find_param(const struct tmpl *t, const char *name, size_t len)
{
    size_t lo = 0, hi = t->npar;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *k = t->par[mid].kv.key;
        int c = strncmp(k, name, len);
        if (c == 0 && k[len]) c = 1;
        if (c == 0) return &t->par[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The ${...} this file defines, in the text of n; everything else is left as written. */
static int substitute(struct parse *ps, const struct tmpl *t, const struct copy *c,
                      const yaml_node_t *n, char **out)
{
    const char *s = sl__yaml_scalar(n);
    struct sl_buf b = {0};
    int rc = 0;

    while (rc == 0 && *s) {
        const char *dollar = strchr(s, '$');
        if (!dollar) {
            rc = sl__buf_append(&b, s, strlen(s));
            break;
        }
        if (dollar > s && (rc = sl__buf_append(&b, s, (size_t)(dollar - s)))) break;
        s = dollar;
        if (s[1] == '$' && s[2] == '{') {
            rc = sl__buf_append(&b, "${", 2);
            s += 3;
            continue;
        }
        const char *close = s[1] == '{' ? strchr(s + 2, '}') : NULL;
        if (!close) {
            rc = sl__buf_append(&b, "$", 1);
            s++;
            continue;
        }
        const char *name = s + 2;
        size_t len = (size_t)(close - name);
        const char *val = NULL;
        const struct param *pa;
        if (len == 4 && memcmp(name, "item", 4) == 0) {
            if (!t->has_foreach) {
                rc = perr(ps, n, "%s\"${item}\" is used, but the stage has no foreach", t->ctx);
                break;
            }
            val = t->matrix ? c->joined : c->vals[0];
        } else if (len > 5 && memcmp(name, "item.", 5) == 0) {
            if (!t->has_foreach) {
                rc = perr(ps, n, "%s\"${%.*s}\" is used, but the stage has no foreach", t->ctx,
                          (int)len, name);
                break;
            }
            if (!t->matrix) {
                rc = perr(ps, n, "%s\"${%.*s}\": foreach is a list, whose item is ${item}",
                          t->ctx, (int)len, name);
                break;
            }
            for (size_t k = 0; k < t->nkeys && !val; k++)
                if (strlen(t->fkeys[k]) == len - 5 && memcmp(t->fkeys[k], name + 5, len - 5) == 0)
                    val = c->vals[k];
            if (!val) {
                struct sl_buf keys = {0};
                for (size_t k = 0; k < t->nkeys; k++)
                    sl__buf_printf(&keys, "%s%s", k ? ", " : "", t->fkeys[k]);
                rc = perr(ps, n, "%sunknown \"${%.*s}\" (foreach keys: %s)", t->ctx, (int)len,
                          name, keys.data ? keys.data : "");
                sl__buf_free(&keys);
                break;
            }
        } else if ((pa = find_param(t, name, len))) {
            val = pa->text;
        }
        if (val)
            rc = sl__buf_append(&b, val, strlen(val));
        else
            rc = sl__buf_append(&b, s, (size_t)(close + 1 - s));
        s = close + 1;
    }
    if (rc == 0 && !b.data) rc = sl__buf_append(&b, "", 0);
    if (rc) {
        sl__buf_free(&b);
        return rc;
    }
    *out = b.data;
    return 0;
}

static int subst_paths(struct parse *ps, const struct tmpl *t, const struct copy *c,
                       yaml_node_t **nodes, size_t n, const char *what,
                       struct sl_pipe_path **out, size_t *count)
{
    int rc;
    if (n == 0) return 0;
    if (!(*out = calloc(n, sizeof(**out)))) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct sl_pipe_path *pp = &(*out)[(*count)++];
        pp->at = mark_of(nodes[i]);
        if ((rc = substitute(ps, t, c, nodes[i], &pp->path))) return rc;
        if (!*pp->path)
            return perr(ps, nodes[i], "%s%s \"%s\" is empty once substituted", t->ctx, what,
                        sl__yaml_scalar(nodes[i]));
    }
    return 0;
}

/* ---- stages ------------------------------------------------------------------------------- */

static bool valid_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

static bool valid_env_name(const char *s)
{
    if (!*s || isdigit((unsigned char)*s)) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_') return false;
    return true;
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const struct sl_pipe_kv *)a)->key, ((const struct sl_pipe_kv *)b)->key);
}

static void tmpl_free(struct tmpl *t)
{
    free(t->dep_n);
    free(t->out_n);
    free(t->after_n);
    for (size_t i = 0; i < t->npar; i++) {
        free(t->par[i].kv.key);
        free(t->par[i].kv.value);
        free(t->par[i].text);
    }
    free(t->par);
    free(t->fkeys);
    free(t->flists);
}

static int new_stage(struct sl_pipeline *p, size_t *cap, struct sl_stage **out)
{
    if (p->nstages == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct sl_stage *n = realloc(p->stages, ncap * sizeof(*n));
        if (!n) return -ENOMEM;
        p->stages = n;
        *cap = ncap;
    }
    *out = &p->stages[p->nstages++];
    memset(*out, 0, sizeof(**out));
    return 0;
}

/* Characters a name may not hold become '_': "a/b" makes the copy prep@a_b. */
static int append_suffix(struct sl_buf *b, const char *s)
{
    int rc = 0;
    for (; rc == 0 && *s; s++) rc = sl__buf_append(b, valid_name_char(*s) ? s : "_", 1);
    return rc;
}

static int make_copy(struct parse *ps, struct tmpl *t, struct copy *c, size_t *cap)
{
    struct sl_stage *st;
    int rc = new_stage(ps->p, cap, &st);
    if (rc) return rc;

    st->at = mark_of(t->key);
    st->cmd_at = mark_of(t->cmd);
    st->res = t->res;
    st->retries = t->nretries;
    st->retry_delay_ns = t->retry_delay_ns;
    st->timeout_ns = t->timeout_ns;
    if (!(st->group = sl__strdup(t->group))) return -ENOMEM;
    if (!t->has_foreach) {
        st->name = sl__strdup(t->group);
    } else {
        struct sl_buf b = {0};
        rc = sl__buf_printf(&b, "%s@", t->group);
        for (size_t k = 0; rc == 0 && k < t->nkeys; k++) {
            if (k) rc = sl__buf_append(&b, "-", 1);
            if (rc == 0) rc = append_suffix(&b, c->vals[k]);
        }
        if (rc) {
            sl__buf_free(&b);
            return rc;
        }
        st->name = b.data;
    }
    if (!st->name) return -ENOMEM;

    if ((rc = substitute(ps, t, c, t->cmd, &st->cmd))) return rc;
    if ((rc = subst_paths(ps, t, c, t->dep_n, t->ndep, "dep", &st->deps, &st->ndeps))) return rc;
    if ((rc = subst_paths(ps, t, c, t->out_n, t->nout, "out", &st->outs, &st->nouts))) return rc;
    if ((rc = subst_paths(ps, t, c, t->after_n, t->nafter, "after", &st->after, &st->nafter)))
        return rc;
    if (t->npar) {
        if (!(st->params = calloc(t->npar, sizeof(*st->params)))) return -ENOMEM;
        for (size_t i = 0; i < t->npar; i++) {
            struct sl_pipe_kv *kv = &st->params[st->nparams++];
            kv->at = t->par[i].kv.at;
            kv->key = sl__strdup(t->par[i].kv.key);
            kv->value = sl__strdup(t->par[i].kv.value);
            if (!kv->key || !kv->value) return -ENOMEM;
        }
    }
    if (t->nenv) {
        if (!(st->env = calloc(t->nenv, sizeof(*st->env)))) return -ENOMEM;
        for (size_t i = 0; i < t->nenv; i++) {
            yaml_node_t *k = node(&ps->doc, t->env_pairs[i].key);
            yaml_node_t *v = node(&ps->doc, t->env_pairs[i].value);
            struct sl_pipe_kv *kv = &st->env[st->nenv++];
            kv->at = mark_of(k);
            if (!(kv->key = sl__strdup(sl__yaml_scalar(k)))) return -ENOMEM;
            if ((rc = substitute(ps, t, c, v, &kv->value))) return rc;
        }
        if (st->nenv > 1) qsort(st->env, st->nenv, sizeof(*st->env), cmp_kv);
    }
    return 0;
}

/* The items of copy i: the cartesian product in key order, the last key varying fastest. */
static void copy_values(struct parse *ps, const struct tmpl *t, size_t i, const char **vals)
{
    for (size_t k = t->nkeys; k-- > 0;) {
        const yaml_node_t *seq = t->flists[k];
        size_t len = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
        vals[k] = sl__yaml_scalar(node(&ps->doc, seq->data.sequence.items.start[i % len]));
        i /= len;
    }
}

static char *join_values(const struct tmpl *t, const char **vals)
{
    struct sl_buf b = {0};
    int rc = sl__buf_append(&b, "", 0);
    for (size_t k = 0; rc == 0 && k < t->nkeys; k++)
        rc = sl__buf_printf(&b, "%s%s", k ? "-" : "", vals[k]);
    if (rc) sl__buf_free(&b);
    return b.data;
}

struct copy_name {
    const char *name;
    size_t copy;
};

static int cmp_copy_name(const void *a, const void *b)
{
    const struct copy_name *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->copy > y->copy) - (x->copy < y->copy);
}

/* Two items that differ only in characters a name cannot hold ("a/b", "a_b") would make two
 * copies of one name: which one does `sluice run prep@a_b` mean? */
static int check_copy_names(struct parse *ps, struct tmpl *t, size_t first)
{
    size_t n = ps->p->nstages - first;
    int rc = 0;
    if (n < 2) return 0;
    struct copy_name *names = malloc(n * sizeof(*names));
    if (!names) return -ENOMEM;
    for (size_t i = 0; i < n; i++) names[i] = (struct copy_name){ps->p->stages[first + i].name, i};
    qsort(names, n, sizeof(*names), cmp_copy_name);
    size_t bad = SIZE_MAX, other = 0;
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i].name, names[i - 1].name) == 0 && names[i].copy < bad) {
            bad = names[i].copy;
            other = names[i - 1].copy;
        }
    if (bad != SIZE_MAX) {
        /* A list's item has its own mark; a matrix's copy is the foreach as a whole. */
        const yaml_node_t *at = t->foreach;
        char a[256], b[256];
        if (!t->matrix) {
            yaml_node_t *seq = t->flists[0];
            at = node(&ps->doc, seq->data.sequence.items.start[bad]);
            snprintf(a, sizeof(a), "%s",
                     sl__yaml_scalar(node(&ps->doc, seq->data.sequence.items.start[other])));
            snprintf(b, sizeof(b), "%s", sl__yaml_scalar(at));
        } else {
            char *ja = NULL, *jb = NULL;
            const char **v = calloc(t->nkeys, sizeof(*v));
            if (v) {
                copy_values(ps, t, other, v);
                ja = join_values(t, v);
                copy_values(ps, t, bad, v);
                jb = join_values(t, v);
            }
            snprintf(a, sizeof(a), "%s", ja ? ja : "");
            snprintf(b, sizeof(b), "%s", jb ? jb : "");
            free(ja);
            free(jb);
            free(v);
        }
        rc = perr(ps, at, "%sforeach items \"%s\" and \"%s\" both make the stage \"%s\"", t->ctx,
                  a, b, ps->p->stages[first + bad].name);
    }
    free(names);
    return rc;
}

static int expand(struct parse *ps, struct tmpl *t, size_t *cap)
{
    struct copy c = {0};
    size_t first = ps->p->nstages;
    int rc = 0;

    if (!t->has_foreach) return make_copy(ps, t, &c, cap);
    if (!(c.vals = calloc(t->nkeys, sizeof(*c.vals)))) return -ENOMEM;
    for (size_t i = 0; i < t->ncopies; i++) {
        copy_values(ps, t, i, c.vals);
        free(c.joined);
        if (!(c.joined = join_values(t, c.vals))) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = make_copy(ps, t, &c, cap))) goto out;
    }
    rc = check_copy_names(ps, t, first);
out:
    free(c.vals);
    free(c.joined);
    return rc;
}

static int parse_stage(struct parse *ps, yaml_node_t *k, yaml_node_t *v, size_t *cap)
{
    struct tmpl t = {.key = k, .group = sl__yaml_scalar(k)};
    int rc = 0;

    if (!t.group || !*t.group)
        return perr(ps, k, "stages: expected a stage name, got %s", sl__yaml_kind(k));
    for (const char *c = t.group; *c; c++)
        if (!valid_name_char(*c))
            return perr(ps, k, "stage name \"%s\": a name may hold only letters, digits, '_', "
                               "'.' and '-'", t.group);
    snprintf(t.ctx, sizeof(t.ctx), "stage \"%s\": ", t.group);
    snprintf(t.where, sizeof(t.where), " of stage \"%s\"", t.group);
    if (v->type != YAML_MAPPING_NODE)
        return perr(ps, v, "%sexpected a mapping with keys %s, got %s", t.ctx, stage_known,
                    sl__yaml_kind(v));
    if ((rc = check_dups(ps, v, t.ctx, "key"))) return rc;

    struct {
        const char *name;
        yaml_node_t **slot;
    } slots[] = {
        {"cmd", &t.cmd},         {"deps", &t.deps},         {"outs", &t.outs},
        {"params", &t.params},   {"resources", &t.resources}, {"retries", &t.retries},
        {"retry_delay", &t.retry_delay}, {"timeout", &t.timeout}, {"env", &t.env},
        {"after", &t.after},     {"foreach", &t.foreach},
    };
    for (yaml_node_pair_t *pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = node(&ps->doc, pr->key);
        const char *key = sl__yaml_scalar(kn);
        size_t i = 0;
        if (!key) return perr(ps, kn, "%sexpected a key (one of %s), got %s", t.ctx, stage_known,
                              sl__yaml_kind(kn));
        while (i < SL_ARRAY_LEN(slots) && strcmp(slots[i].name, key) != 0) i++;
        if (i == SL_ARRAY_LEN(slots))
            return perr(ps, kn, "unknown key \"%s\" in stage \"%s\" (known: %s)", key, t.group,
                        stage_known);
        *slots[i].slot = node(&ps->doc, pr->value);
    }

    const char *cmd;
    if (!t.cmd) return perr(ps, k, "%smissing cmd: (the command the stage runs)", t.ctx);
    if ((rc = want_string(ps, t.cmd, t.ctx, "cmd", "a command (a non-empty string)", &cmd)))
        goto out;
    t.res.cpus = 1;
    t.retry_delay_ns = 1000000000LL;
    if (t.resources && (rc = parse_resources(ps, t.resources, t.ctx, t.where, &t.res, NULL, NULL,
                                             NULL)))
        goto out;
    if (t.retries && (rc = want_count(ps, t.retries, t.ctx, "retries", 0, MAX_RETRIES,
                                      &t.nretries)))
        goto out;
    if (t.retry_delay && (rc = want_duration(ps, t.retry_delay, t.ctx, "retry_delay",
                                             "0 for none", &t.retry_delay_ns)))
        goto out;
    if (t.timeout && (rc = want_duration(ps, t.timeout, t.ctx, "timeout", "0 for none",
                                         &t.timeout_ns)))
        goto out;
    if (t.deps && (rc = want_strings(ps, t.deps, t.ctx, "deps", "paths", &t.dep_n, &t.ndep)))
        goto out;
    if (t.outs && (rc = want_strings(ps, t.outs, t.ctx, "outs", "paths", &t.out_n, &t.nout)))
        goto out;
    if (t.after && (rc = want_strings(ps, t.after, t.ctx, "after", "stage names", &t.after_n,
                                      &t.nafter)))
        goto out;
    if (t.env && !is_null(t.env)) {
        if (t.env->type != YAML_MAPPING_NODE) {
            rc = perr(ps, t.env, "%senv: expected a mapping of NAME: value, got %s", t.ctx,
                      sl__yaml_kind(t.env));
            goto out;
        }
        if ((rc = check_dups(ps, t.env, t.ctx, "env variable"))) goto out;
        t.env_pairs = t.env->data.mapping.pairs.start;
        t.nenv = npairs(t.env);
        for (size_t i = 0; i < t.nenv; i++) {
            yaml_node_t *ek = node(&ps->doc, t.env_pairs[i].key);
            yaml_node_t *ev = node(&ps->doc, t.env_pairs[i].value);
            const char *name = sl__yaml_scalar(ek);
            if (!name || !valid_env_name(name)) {
                rc = perr(ps, ek, "%senv: \"%s\" is not a variable name (letters, digits and '_', "
                                  "not starting with a digit)", t.ctx, name ? name : "");
                goto out;
            }
            if (!sl__yaml_scalar(ev)) {
                rc = perr(ps, ev, "%senv.%s: expected a value, got %s", t.ctx, name,
                          sl__yaml_kind(ev));
                goto out;
            }
        }
    }
    if (t.params && (rc = parse_params(ps, &t))) goto out;
    if (t.foreach && (rc = parse_foreach(ps, &t))) goto out;
    rc = expand(ps, &t, cap);
out:
    tmpl_free(&t);
    return rc;
}

static int parse_root(struct parse *ps)
{
    yaml_node_t *root = yaml_document_get_root_node(&ps->doc), *stages = NULL;
    struct sl_pipeline *p = ps->p;
    size_t cap = 0;
    int rc;

    if (!root || is_null(root)) {
        yaml_mark_t start = {0};
        return err_at(ps->name, start, "missing stages: (a mapping of stage names to stages)");
    }
    if (root->type != YAML_MAPPING_NODE)
        return perr(ps, root, "expected a mapping with keys %s, got %s", top_known,
                    sl__yaml_kind(root));
    if ((rc = check_dups(ps, root, "", "key"))) return rc;

    /* Everything but the stages first: a stage's params need to know the params file. */
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
         pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = node(&ps->doc, pr->key), *v = node(&ps->doc, pr->value);
        const char *key = sl__yaml_scalar(k), *s;
        if (!key)
            return perr(ps, k, "expected a key (one of %s), got %s", top_known, sl__yaml_kind(k));
        if (strcmp(key, "stages") == 0) {
            stages = v;
        } else if (strcmp(key, "executor") == 0) {
            if ((rc = want_string(ps, v, "", "executor", "local or slurm", &s))) return rc;
            if (strcmp(s, "local") == 0)
                p->executor = SL_EXEC_LOCAL;
            else if (strcmp(s, "slurm") == 0)
                p->executor = SL_EXEC_SLURM;
            else
                return perr(ps, v, "executor: expected local or slurm, got \"%s\"", s);
        } else if (strcmp(key, "resources") == 0) {
            if ((rc = parse_resources(ps, v, "", "", &p->limit, &p->has_limit_cpus,
                                      &p->has_limit_mem, &p->has_limit_gpus)))
                return rc;
        } else if (strcmp(key, "slurm") == 0) {
            if (is_null(v)) continue;
            if (v->type != YAML_MAPPING_NODE)
                return perr(ps, v, "slurm: expected a mapping with keys partition, got %s",
                            sl__yaml_kind(v));
            if ((rc = check_dups(ps, v, "slurm: ", "key"))) return rc;
            for (yaml_node_pair_t *q = v->data.mapping.pairs.start;
                 q < v->data.mapping.pairs.top; q++) {
                yaml_node_t *sk = node(&ps->doc, q->key), *sv = node(&ps->doc, q->value);
                if (!sl__yaml_scalar(sk) || strcmp(sl__yaml_scalar(sk), "partition") != 0)
                    return perr(ps, sk, "unknown key \"%s\" in slurm (known: partition)",
                                sl__yaml_scalar(sk) ? sl__yaml_scalar(sk) : "");
                if ((rc = want_string(ps, sv, "", "slurm.partition", "a partition name", &s)))
                    return rc;
                free(p->slurm_partition);
                if (!(p->slurm_partition = sl__strdup(s))) return -ENOMEM;
            }
        } else if (strcmp(key, "params") == 0) {
            if ((rc = want_string(ps, v, "", "params", "the params file (a path)", &s)))
                return rc;
            ps->params_file = s;
        } else {
            return perr(ps, k, "unknown key \"%s\" (known: %s)", key, top_known);
        }
    }
    if (!stages)
        return perr(ps, root, "missing stages: (a mapping of stage names to stages)");
    if (stages->type != YAML_MAPPING_NODE && !is_null(stages))
        return perr(ps, stages, "stages: expected a mapping of stage names to stages, got %s",
                    sl__yaml_kind(stages));
    if (is_null(stages) || npairs(stages) == 0)
        return perr(ps, stages, "stages: no stages (expected a mapping of stage names to "
                                "stages)");
    if ((rc = check_dups(ps, stages, "", "stage"))) return rc;
    for (yaml_node_pair_t *pr = stages->data.mapping.pairs.start;
         pr < stages->data.mapping.pairs.top; pr++)
        if ((rc = parse_stage(ps, node(&ps->doc, pr->key), node(&ps->doc, pr->value), &cap)))
            return rc;
    return 0;
}

/* ---- the API ------------------------------------------------------------------------------ */

int sl_pipeline_parse(const char *name, const char *dir, const char *text, size_t len,
                      struct sl_pipeline **out)
{
    struct parse ps = {.name = name};
    bool have_doc = false;
    int rc;

    if (!name || !text || !out) return SL_E_USAGE;
    if (len > PIPELINE_MAX_BYTES)
        return sl__err(SL_E_CONFIG, "%s: larger than %u MiB; is it the right file?", name,
                       PIPELINE_MAX_BYTES >> 20);
    if (!(ps.p = calloc(1, sizeof(*ps.p)))) return -ENOMEM;
    ps.p->file = sl__strdup(name);
    ps.p->dir = dir ? sl__strdup(dir) : getcwd(NULL, 0);
    if (!ps.p->file || !ps.p->dir) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = sl__yaml_load(name, text, len, &ps.doc))) goto out;
    have_doc = true;
    if ((rc = parse_root(&ps))) goto out;
    *out = ps.p;
    ps.p = NULL;
out:
    if (have_doc) yaml_document_delete(&ps.doc);
    if (ps.params_loaded) yaml_document_delete(&ps.pdoc);
    free(ps.params_path);
    sl_pipeline_free(ps.p);
    return rc;
}

int sl_pipeline_load(const char *path, struct sl_pipeline **out)
{
    char *text = NULL, *copy = NULL, *dir = NULL;
    size_t len = 0;
    int rc;

    if (!path || !out) return SL_E_USAGE;
    rc = read_text(path, PIPELINE_MAX_BYTES, &text, &len);
    if (rc == SL_E_CONFIG) return rc;
    if (rc) return sl__err(rc, "%s: %s", path, strerror(-rc));
    /* Commands run in the file's folder, and relative paths start there: name it absolutely
     * now, so that a later chdir changes nothing. */
    if (!(copy = sl__strdup(path))) {
        rc = -ENOMEM;
        goto out;
    }
    if (!(dir = realpath(dirname(copy), NULL))) {
        rc = sl__err(-errno, "%s: its folder: %s", path, strerror(errno));
        goto out;
    }
    rc = sl_pipeline_parse(path, dir, text, len, out);
out:
    free(text);
    free(copy);
    free(dir);
    return rc;
}

static void free_paths(struct sl_pipe_path *v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i].path);
    free(v);
}

static void free_kvs(struct sl_pipe_kv *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].key);
        free(v[i].value);
    }
    free(v);
}

void sl_pipeline_free(struct sl_pipeline *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nstages; i++) {
        struct sl_stage *st = &p->stages[i];
        free(st->name);
        free(st->group);
        free(st->cmd);
        free_paths(st->deps, st->ndeps);
        free_paths(st->outs, st->nouts);
        free_paths(st->after, st->nafter);
        free_kvs(st->params, st->nparams);
        free_kvs(st->env, st->nenv);
        free(st->up);
        free(st->down);
    }
    free(p->stages);
    free(p->file);
    free(p->dir);
    free(p->slurm_partition);
    free(p);
}

long sl_pipeline_find(const struct sl_pipeline *p, const char *name)
{
    if (!p || !name) return -1;
    for (size_t i = 0; i < p->nstages; i++)
        if (strcmp(p->stages[i].name, name) == 0) return (long)i;
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].group && strcmp(p->stages[i].group, name) == 0) return (long)i;
    return -1;
}

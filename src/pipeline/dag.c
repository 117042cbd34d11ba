/*
 * dag.c - which stage runs before which: an out that another stage reads as a dep, and
 * `after:`; and the errors that make a pipeline impossible to run (two stages writing one
 * path, a stage reading its own out, a dep that nothing makes and nothing holds, a cycle).
 *
 * Paths are compared by a key: the path made absolute (a relative one starts at the pipeline's
 * folder) and lexically normalised ("./data//raw/" and "data/raw" are one path; ".." is
 * resolved), or for a URI (s3://b/k) its scheme and authority as written and its path part
 * normalised. Nothing is resolved through the file system: a symlink is a path of its own, as
 * the user wrote it.
 *
 * An out may be a folder, and a folder holds the paths below it. So a dep is made by the stage
 * whose out is the dep itself or a folder above it, found by looking up the dep's key and then
 * each parent folder's in a hash table of outs; and a dep that is a folder above outs reads all
 * of them, found by a range scan of the outs sorted by key (the keys below "data/" are one run
 * of the sorted array). No two stages' outs may overlap, so the first out found walking up is
 * the only stage that makes the dep. All of it is O(paths x depth) plus the edges found:
 * ten thousand stages build in milliseconds.
 *
 * Cycles are found by an iterative depth-first search over the down edges (a chain of ten
 * thousand stages must not need ten thousand stack frames), and named in data-flow order
 * starting from the stage that comes first in the file.
 *
 * Each stage's up[] and down[] are sorted and unique. On error every stage's up and down are
 * left empty: a half-built DAG is never handed to the scheduler.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/core.h"
#include "pipeline/pipeline.h"

/* ---- a string -> index hash table (open addressing; keys borrowed) ------------------------- */

struct slot {
    const char *key; /* NULL: empty */
    size_t len;
    size_t val;
};

struct table {
    struct slot *slots;
    size_t mask;
};

static int table_init(struct table *t, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    t->slots = calloc(cap, sizeof(*t->slots));
    t->mask = cap - 1;
    return t->slots ? 0 : -ENOMEM;
}

static const struct slot *table_get(const struct table *t, const char *key, size_t len)
{
    for (size_t i = XXH3_64bits(key, len) & t->mask;; i = (i + 1) & t->mask) {
        const struct slot *s = &t->slots[i];
        if (!s->key) return NULL;
        if (s->len == len && memcmp(s->key, key, len) == 0) return s;
    }
}

/* Keeps the first value put for a key: for names, the first stage of a group. */
static void table_put(struct table *t, const char *key, size_t val)
{
    size_t len = strlen(key);
    for (size_t i = XXH3_64bits(key, len) & t->mask;; i = (i + 1) & t->mask) {
        struct slot *s = &t->slots[i];
        if (!s->key) {
            *s = (struct slot){key, len, val};
            return;
        }
        if (s->len == len && memcmp(s->key, key, len) == 0) return;
    }
}

/* ---- paths --------------------------------------------------------------------------------- */

/* scheme://authority: the length of that prefix, or 0 for a plain path. */
static size_t uri_prefix(const char *s)
{
    const char *c = s;
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))) return 0;
    while ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
           *c == '+' || *c == '-' || *c == '.')
        c++;
    if (strncmp(c, "://", 3) != 0) return 0;
    c += 3;
    while (*c && *c != '/') c++;
    return (size_t)(c - s);
}

/* Appends s's components to b, each as "/NAME", dropping "" and "." and resolving "..": above
 * base (what b held that is not to be undone), ".." is kept when keep_up (a relative path's
 * "../x" means something) and dropped otherwise (as "/.." is "/"). */
static int push_components(struct sl_buf *b, size_t base, const char *s, bool keep_up)
{
    int rc = 0;
    while (rc == 0 && *s) {
        const char *e = strchrnul(s, '/');
        size_t n = (size_t)(e - s);
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            size_t last = b->len;
            while (last > base && b->data[last - 1] != '/') last--;
            bool up_is_dotdot = b->len - last == 2 && memcmp(b->data + last, "..", 2) == 0;
            if (b->len > base && !up_is_dotdot) {
                b->len = last - 1;
                b->data[b->len] = '\0';
            } else if (keep_up) {
                rc = sl__buf_append(b, "/..", 3);
            }
        } else if (n > 0 && !(n == 1 && s[0] == '.')) {
            rc = sl__buf_append(b, "/", 1);
            if (rc == 0) rc = sl__buf_append(b, s, n);
        }
        s = *e ? e + 1 : e;
    }
    return rc;
}

/* The key that comparisons use (absolute, normalised), and its root: the part no parent walk
 * may cut (1 for "/", the scheme and authority of a URI). */
static int path_key(const char *dir, const char *path, char **key, size_t *root)
{
    struct sl_buf b = {0};
    size_t pre = uri_prefix(path);
    int rc = sl__buf_append(&b, "", 0);
    if (rc == 0 && pre) {
        rc = sl__buf_append(&b, path, pre);
        if (rc == 0) rc = push_components(&b, pre, path + pre, false);
        *root = pre;
    } else if (rc == 0) {
        if (path[0] != '/') rc = push_components(&b, 0, dir, false);
        if (rc == 0) rc = push_components(&b, 0, path, false);
        if (rc == 0 && b.len == 0) rc = sl__buf_append(&b, "/", 1);
        *root = 1;
    }
    if (rc) {
        sl__buf_free(&b);
        return rc;
    }
    *key = b.data;
    return 0;
}

/* What exists() is asked about: the path normalised as written (relative stays relative). */
static int path_shown(const char *path, char **out)
{
    struct sl_buf b = {0};
    size_t pre = uri_prefix(path);
    int rc = sl__buf_append(&b, path, pre);
    if (rc == 0) rc = push_components(&b, pre, path + pre, pre == 0 && path[0] != '/');
    if (rc) {
        sl__buf_free(&b);
        return rc;
    }
    if (pre || path[0] == '/') {
        if (b.len == 0) rc = sl__buf_append(&b, "/", 1);
        *out = b.data;
    } else {
        *out = sl__strdup(b.len ? b.data + 1 : ".");
        sl__buf_free(&b);
    }
    return rc ? rc : *out ? 0 : -ENOMEM;
}

/* The key's parent folder, as a length of key; 0 at the root. */
static size_t parent_len(const char *key, size_t len, size_t root)
{
    if (len <= root) return 0;
    size_t i = len;
    while (i > 0 && key[i - 1] != '/') i--;
    if (i == 0) return 0;
    return i - 1 >= root ? i - 1 : root;
}

/* ---- the build ------------------------------------------------------------------------------ */

struct out_ent {
    char *key;
    size_t root;
    size_t stage, idx;
};

struct dag {
    struct sl_pipeline *p;
    struct out_ent *outs; /* sorted by key */
    size_t nouts;
    struct table out_by_key, by_name, by_group;
    size_t *next_in_group; /* the next stage of the same group, SIZE_MAX at the last */
    size_t *ups;           /* the stage being built's up edges, before sort and unique */
    size_t nups, cap_ups;
};

static int err_at(const struct sl_pipeline *p, struct sl_mark m, const char *fmt, ...)
    SL_PRINTF(3, 4);
static int err_at(const struct sl_pipeline *p, struct sl_mark m, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return sl__err(SL_E_CONFIG, "%s:%zu:%zu: %s", p->file, m.line, m.col, msg);
}

static int cmp_out(const void *a, const void *b)
{
    const struct out_ent *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c) return c;
    if (x->stage != y->stage) return x->stage < y->stage ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* (stage, idx) of an out, in file order. */
static bool before(const struct out_ent *a, const struct out_ent *b)
{
    return a->stage < b->stage || (a->stage == b->stage && a->idx < b->idx);
}

static const struct sl_pipe_path *out_path(const struct dag *d, const struct out_ent *e)
{
    return &d->p->stages[e->stage].outs[e->idx];
}

static void reset(struct sl_pipeline *p)
{
    for (size_t i = 0; i < p->nstages; i++) {
        struct sl_stage *st = &p->stages[i];
        free(st->up);
        free(st->down);
        st->up = st->down = NULL;
        st->nup = st->ndown = 0;
    }
}

static int add_up(struct dag *d, size_t stage)
{
    if (d->nups == d->cap_ups) {
        size_t cap = d->cap_ups ? d->cap_ups * 2 : 16;
        size_t *n = realloc(d->ups, cap * sizeof(*n));
        if (!n) return -ENOMEM;
        d->ups = n;
        d->cap_ups = cap;
    }
    d->ups[d->nups++] = stage;
    return 0;
}

/* The first out entry whose key starts with prefix (a lower bound). */
static size_t lower_bound(const struct dag *d, const char *prefix)
{
    size_t lo = 0, hi = d->nouts;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(d->outs[mid].key, prefix) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The run of outs strictly below key: [*first, *end). */
static int below(const struct dag *d, const char *key, size_t *first, size_t *end)
{
    size_t len = strlen(key);
    char *prefix = key[len - 1] == '/' ? sl__strdup(key) : sl__asprintf("%s/", key);
    if (!prefix) return -ENOMEM;
    size_t plen = strlen(prefix), i = lower_bound(d, prefix);
    *first = i;
    while (i < d->nouts && strncmp(d->outs[i].key, prefix, plen) == 0) i++;
    *end = i;
    free(prefix);
    return 0;
}

static int collect_outs(struct dag *d)
{
    struct sl_pipeline *p = d->p;
    int rc;
    for (size_t i = 0; i < p->nstages; i++) d->nouts += p->stages[i].nouts;
    if (d->nouts && !(d->outs = calloc(d->nouts, sizeof(*d->outs)))) return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < p->nstages; i++)
        for (size_t j = 0; j < p->stages[i].nouts; j++) {
            struct out_ent *e = &d->outs[n++];
            e->stage = i;
            e->idx = j;
            if ((rc = path_key(p->dir, p->stages[i].outs[j].path, &e->key, &e->root))) return rc;
        }
    if (d->nouts > 1) qsort(d->outs, d->nouts, sizeof(*d->outs), cmp_out);

    /* One path written twice: the later of the first such pair, in file order. */
    const struct out_ent *dup = NULL, *orig = NULL;
    for (size_t i = 1; i < d->nouts; i++)
        if (strcmp(d->outs[i].key, d->outs[i - 1].key) == 0 && (!dup || before(&d->outs[i], dup))) {
            dup = &d->outs[i];
            orig = &d->outs[i - 1];
        }
    if (dup) {
        const struct sl_pipe_path *a = out_path(d, orig), *b = out_path(d, dup);
        if (orig->stage == dup->stage)
            return err_at(p, b->at, "stage \"%s\": out \"%s\" is given twice (first at %zu:%zu)",
                          p->stages[dup->stage].name, b->path, a->at.line, a->at.col);
        return err_at(p, b->at, "stage \"%s\": out \"%s\" is also an out of stage \"%s\" "
                                "(%s:%zu:%zu); two stages may not write one path",
                      p->stages[dup->stage].name, b->path, p->stages[orig->stage].name, p->file,
                      a->at.line, a->at.col);
    }

    if ((rc = table_init(&d->out_by_key, d->nouts))) return rc;
    for (size_t i = 0; i < d->nouts; i++) table_put(&d->out_by_key, d->outs[i].key, i);

    /* An out inside another stage's out: which of the two makes the files below? Found from
     * the inner one, walking up; reported at the later of the pair. */
    const struct out_ent *x = NULL, *y = NULL; /* earlier, later */
    for (size_t i = 0; i < d->nouts; i++) {
        const struct out_ent *e = &d->outs[i];
        size_t len = strlen(e->key);
        while ((len = parent_len(e->key, len, e->root))) {
            const struct slot *s = table_get(&d->out_by_key, e->key, len);
            if (!s) continue;
            const struct out_ent *o = &d->outs[s->val];
            if (o->stage == e->stage) continue; /* nested outs of one stage: harmless */
            const struct out_ent *early = before(o, e) ? o : e, *late = early == o ? e : o;
            if (!y || before(late, y)) {
                x = early;
                y = late;
            }
            break;
        }
    }
    if (y) {
        const struct sl_pipe_path *a = out_path(d, x), *b = out_path(d, y);
        return err_at(p, b->at, "outs \"%s\" of stage \"%s\" (%s:%zu:%zu) and \"%s\" of stage "
                                "\"%s\" overlap",
                      a->path, p->stages[x->stage].name, p->file, a->at.line, a->at.col, b->path,
                      p->stages[y->stage].name);
    }
    return 0;
}

static int dep_edges(struct dag *d, size_t si, const struct sl_pipe_path *dep,
                     sl_pipe_exists_fn exists, void *arg)
{
    struct sl_pipeline *p = d->p;
    const char *name = p->stages[si].name;
    char *key = NULL, *shown = NULL;
    size_t root, len, first, end;
    int rc;

    if ((rc = path_key(p->dir, dep->path, &key, &root))) return rc;
    /* The dep itself, or the nearest folder above it, as an out. */
    len = strlen(key);
    do {
        const struct slot *s = table_get(&d->out_by_key, key, len);
        if (!s) continue;
        const struct out_ent *o = &d->outs[s->val];
        if (o->stage == si) {
            if (len == strlen(key))
                rc = err_at(p, dep->at, "stage \"%s\": dep \"%s\" is its own out", name,
                            dep->path);
            else
                rc = err_at(p, dep->at, "stage \"%s\": dep \"%s\" is inside its own out \"%s\"",
                            name, dep->path, out_path(d, o)->path);
            goto out;
        }
        rc = add_up(d, o->stage);
        goto out;
    } while ((len = parent_len(key, len, root)));

    /* A folder above outs: it reads every one of them. */
    if ((rc = below(d, key, &first, &end))) goto out;
    for (size_t i = first; i < end; i++) {
        const struct out_ent *o = &d->outs[i];
        if (o->stage == si) {
            rc = err_at(p, dep->at, "stage \"%s\": dep \"%s\" holds its own out \"%s\"", name,
                        dep->path, out_path(d, o)->path);
            goto out;
        }
        if ((rc = add_up(d, o->stage))) goto out;
    }
    if (first < end || !exists) goto out;

    if ((rc = path_shown(dep->path, &shown))) goto out;
    if (!exists(arg, shown))
        rc = err_at(p, dep->at, "stage \"%s\": dep \"%s\" does not exist and no stage makes it",
                    name, dep->path);
out:
    free(key);
    free(shown);
    return rc;
}

/* Edit distance, for "did you mean": small strings only. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            if (up + 1 < best) best = up + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static int after_missing(struct dag *d, size_t si, const struct sl_pipe_path *a)
{
    struct sl_pipeline *p = d->p;
    struct sl_buf near = {0};
    size_t shown = 0;
    for (size_t i = 0; i < p->nstages && shown < 3; i++) {
        const char *cands[2] = {p->stages[i].name, p->stages[i].group};
        for (size_t c = 0; c < 2 && shown < 3; c++) {
            const char *n = cands[c];
            if (!n || (c == 1 && strcmp(n, cands[0]) == 0)) continue;
            if (c == 1 && i > 0 && p->stages[i - 1].group &&
                strcmp(p->stages[i - 1].group, n) == 0)
                continue;
            if (distance(n, a->path) > 2) continue;
            sl__buf_printf(&near, "%s\"%s\"", shown ? ", " : "", n);
            shown++;
        }
    }
    int rc = err_at(p, a->at, "stage \"%s\": after: no stage or group \"%s\"%s%s%s",
                    p->stages[si].name, a->path, shown ? " (did you mean " : "",
                    shown ? near.data : "", shown ? "?)" : "");
    sl__buf_free(&near);
    return rc;
}

static int after_edges(struct dag *d, size_t si, const struct sl_pipe_path *a)
{
    size_t len = strlen(a->path);
    const struct slot *s = table_get(&d->by_name, a->path, len);
    if (s) return add_up(d, s->val);
    if (!(s = table_get(&d->by_group, a->path, len))) return after_missing(d, si, a);
    for (size_t i = s->val; i != SIZE_MAX; i = d->next_in_group[i]) {
        int rc = add_up(d, i);
        if (rc) return rc;
    }
    return 0;
}

static int name_cycle(struct sl_pipeline *p, const size_t *cyc, size_t n)
{
    /* Start from the stage first in the file, keeping the order. */
    size_t start = 0;
    for (size_t i = 1; i < n; i++)
        if (cyc[i] < cyc[start]) start = i;
    struct sl_buf b = {0};
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < n; k++) {
        /* A long cycle is named by its ends: the message must stay readable. */
        if (n > 12 && k == 8) {
            rc = sl__buf_printf(&b, "... (%zu more) -> ", n - 10);
            k = n - 2;
        }
        if (rc == 0) rc = sl__buf_printf(&b, "%s -> ", p->stages[cyc[(start + k) % n]].name);
    }
    if (rc == 0) rc = sl__buf_printf(&b, "%s", p->stages[cyc[start]].name);
    if (rc == 0) rc = err_at(p, p->stages[cyc[start]].at, "cycle: %s", b.data);
    sl__buf_free(&b);
    return rc;
}

/* Iterative DFS over down edges; colour 1 is "on the path", whose order is the stack's. */
static int find_cycle(struct sl_pipeline *p)
{
    size_t n = p->nstages, top = 0;
    unsigned char *colour = calloc(n ? n : 1, 1);
    size_t *stack = malloc((n ? n : 1) * sizeof(*stack));
    size_t *pos = malloc((n ? n : 1) * sizeof(*pos));
    size_t *depth = malloc((n ? n : 1) * sizeof(*depth)); /* where a stage is on the stack */
    int rc = 0;

    if (!colour || !stack || !pos || !depth) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t s = 0; s < n && rc == 0; s++) {
        if (colour[s]) continue;
        stack[0] = s;
        pos[0] = 0;
        depth[s] = 0;
        colour[s] = 1;
        top = 1;
        while (top > 0) {
            size_t u = stack[top - 1];
            if (pos[top - 1] == p->stages[u].ndown) {
                colour[u] = 2;
                top--;
                continue;
            }
            size_t v = p->stages[u].down[pos[top - 1]++];
            if (colour[v] == 1) {
                rc = name_cycle(p, stack + depth[v], top - depth[v]);
                goto out;
            }
            if (colour[v] == 0) {
                colour[v] = 1;
                depth[v] = top;
                stack[top] = v;
                pos[top] = 0;
                top++;
            }
        }
    }
out:
    free(colour);
    free(stack);
    free(pos);
    free(depth);
    return rc;
}

int sl_pipeline_dag(struct sl_pipeline *p, sl_pipe_exists_fn exists, void *arg)
{
    struct dag d = {.p = p};
    size_t *ndown = NULL;
    int rc;

    if (!p) return SL_E_USAGE;
    reset(p);
    if ((rc = collect_outs(&d))) goto out;

    if ((rc = table_init(&d.by_name, p->nstages)) || (rc = table_init(&d.by_group, p->nstages)))
        goto out;
    if (!(d.next_in_group = malloc((p->nstages ? p->nstages : 1) * sizeof(size_t)))) {
        rc = -ENOMEM;
        goto out;
    }
    /* Groups chained in file order: each group's last stage seen so far, in ndown for now. */
    if (!(ndown = calloc(p->nstages ? p->nstages : 1, sizeof(*ndown)))) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < p->nstages; i++) {
        const char *g = p->stages[i].group ? p->stages[i].group : p->stages[i].name;
        table_put(&d.by_name, p->stages[i].name, i);
        d.next_in_group[i] = SIZE_MAX;
        const struct slot *s = table_get(&d.by_group, g, strlen(g));
        if (s) {
            d.next_in_group[ndown[s->val]] = i;
            ndown[s->val] = i;
        } else {
            table_put(&d.by_group, g, i);
            ndown[i] = i;
        }
    }

    for (size_t i = 0; i < p->nstages; i++) {
        struct sl_stage *st = &p->stages[i];
        d.nups = 0;
        for (size_t j = 0; j < st->ndeps; j++)
            if ((rc = dep_edges(&d, i, &st->deps[j], exists, arg))) goto out;
        for (size_t j = 0; j < st->nafter; j++)
            if ((rc = after_edges(&d, i, &st->after[j]))) goto out;
        if (d.nups == 0) continue;
        qsort(d.ups, d.nups, sizeof(*d.ups), cmp_size);
        size_t m = 0;
        for (size_t k = 0; k < d.nups; k++)
            if (m == 0 || d.ups[k] != d.ups[m - 1]) d.ups[m++] = d.ups[k];
        if (!(st->up = malloc(m * sizeof(*st->up)))) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(st->up, d.ups, m * sizeof(*st->up));
        st->nup = m;
    }

    /* down[] from up[]: counted, then filled in stage order, so sorted and unique. */
    memset(ndown, 0, p->nstages * sizeof(*ndown));
    for (size_t i = 0; i < p->nstages; i++)
        for (size_t k = 0; k < p->stages[i].nup; k++) ndown[p->stages[i].up[k]]++;
    for (size_t i = 0; i < p->nstages; i++) {
        if (ndown[i] && !(p->stages[i].down = malloc(ndown[i] * sizeof(size_t)))) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < p->nstages; i++)
        for (size_t k = 0; k < p->stages[i].nup; k++) {
            struct sl_stage *u = &p->stages[p->stages[i].up[k]];
            u->down[u->ndown++] = i;
        }
    rc = find_cycle(p);
out:
    if (rc) reset(p);
    for (size_t i = 0; i < d.nouts; i++) free(d.outs[i].key);
    free(d.outs);
    free(d.out_by_key.slots);
    free(d.by_name.slots);
    free(d.by_group.slots);
    free(d.next_in_group);
    free(d.ups);
    free(ndown);
    return rc;
}

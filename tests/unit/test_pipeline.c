/* test_pipeline.c - pipeline.yaml as users write it (every key, foreach, ${...}, params) and the
 * DAG built from it; errors that point at the offending node (FILE:LINE:COL) and say what was
 * wrong; a ten-thousand-stage pipeline built without deep recursion. */
#include "unit.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>

#include "core/core.h"
#include "pipeline/pipeline.h"

#define NAME "pipeline.yaml"
#define DIR "/srv/pipe"

static struct sl_pipeline *parse_in(const char *dir, const char *yaml)
{
    struct sl_pipeline *p = NULL;
    int rc = sl_pipeline_parse(NAME, dir, yaml, strlen(yaml), &p);
    if (rc != 0) fail_msg("pipeline refused (%d): %s\n---\n%s", rc, sl_errmsg(rc), yaml);
    assert_non_null(p);
    return p;
}

static struct sl_pipeline *parse_ok(const char *yaml)
{
    return parse_in(DIR, yaml);
}

static void expect_msg(int rc, const char *yaml, unsigned line, unsigned col, va_list ap)
{
    if (rc != SL_E_CONFIG)
        fail_msg("expected SL_E_CONFIG, got %d (%s)\n---\n%s", rc, sl_errmsg(rc), yaml);
    const char *msg = sl_errmsg(rc);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s:%u:%u: ", NAME, line, col);
    if (strncmp(msg, prefix, strlen(prefix)) != 0)
        fail_msg("message should start with '%s', got '%s'\n---\n%s", prefix, msg, yaml);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(msg, needle))
            fail_msg("message '%s' should mention '%s'\n---\n%s", msg, needle, yaml);
}

/* Refused with SL_E_CONFIG, a message starting "NAME:LINE:COL: " and holding each needle. */
static void expect_error_in(const char *dir, const char *yaml, unsigned line, unsigned col, ...)
{
    struct sl_pipeline *p = (struct sl_pipeline *)0x1;
    int rc = sl_pipeline_parse(NAME, dir, yaml, strlen(yaml), &p);
    assert_ptr_equal(p, (struct sl_pipeline *)0x1); /* *out untouched on failure */
    va_list ap;
    va_start(ap, col);
    expect_msg(rc, yaml, line, col, ap);
    va_end(ap);
}

#define expect_error_at(yaml, line, col, ...) expect_error_in(DIR, yaml, line, col, __VA_ARGS__)

/* Parses, then the DAG must be refused the same way (exists: NULL). */
static void expect_dag_error(const char *yaml, unsigned line, unsigned col, ...)
{
    struct sl_pipeline *p = parse_ok(yaml);
    int rc = sl_pipeline_dag(p, NULL, NULL);
    va_list ap;
    va_start(ap, col);
    expect_msg(rc, yaml, line, col, ap);
    va_end(ap);
    for (size_t i = 0; i < p->nstages; i++) {
        assert_int_equal(p->stages[i].nup, 0); /* nothing half-built */
        assert_int_equal(p->stages[i].ndown, 0);
    }
    sl_pipeline_free(p);
}

static const struct sl_stage *stage(const struct sl_pipeline *p, const char *name)
{
    long i = sl_pipeline_find(p, name);
    if (i < 0) fail_msg("no stage %s", name);
    return &p->stages[i];
}

static void expect_ups(const struct sl_pipeline *p, const char *name, ...)
{
    const struct sl_stage *st = stage(p, name);
    va_list ap;
    va_start(ap, name);
    size_t n = 0;
    for (const char *up; (up = va_arg(ap, const char *)); n++) {
        if (n >= st->nup) fail_msg("stage %s: %zu up, expected more (%s)", name, st->nup, up);
        if (strcmp(p->stages[st->up[n]].name, up) != 0)
            fail_msg("stage %s: up[%zu] is %s, expected %s", name, n, p->stages[st->up[n]].name,
                     up);
    }
    va_end(ap);
    if (n != st->nup) fail_msg("stage %s: %zu up, expected %zu", name, st->nup, n);
}

static void expect_downs(const struct sl_pipeline *p, const char *name, ...)
{
    const struct sl_stage *st = stage(p, name);
    va_list ap;
    va_start(ap, name);
    size_t n = 0;
    for (const char *down; (down = va_arg(ap, const char *)); n++) {
        if (n >= st->ndown) fail_msg("stage %s: %zu down, expected more", name, st->ndown);
        if (strcmp(p->stages[st->down[n]].name, down) != 0)
            fail_msg("stage %s: down[%zu] is %s, expected %s", name, n,
                     p->stages[st->down[n]].name, down);
    }
    va_end(ap);
    if (n != st->ndown) fail_msg("stage %s: %zu down, expected %zu", name, st->ndown, n);
}

static char *join(const char *dir, const char *name)
{
    char *s = NULL;
    assert_true(asprintf(&s, "%s/%s", dir, name) > 0);
    return s;
}

static void write_in(const char *dir, const char *name, const char *text)
{
    char *path = join(dir, name);
    assert_int_equal(unit_write_file(path, text, strlen(text)), 0);
    free(path);
}

/* ---- what is accepted ------------------------------------------------------------------------ */

static void full_file(void **state)
{
    (void)state;
    struct sl_pipeline *p = parse_ok("executor: slurm\n"
                                     "resources: {cpus: 8, mem: 16GiB, gpus: 1}\n"
                                     "slurm: {partition: debug}\n"
                                     "stages:\n"
                                     "  ingest:\n"
                                     "    cmd: python3 ingest.py --out data/raw\n"
                                     "    deps: [ingest.py, conf]\n"
                                     "    outs: data/raw\n"
                                     "    params: {name: adam, lr: 0.1, on: true, q: '1', "
                                     "e: 1e-3, z: ~, n: .5}\n"
                                     "    resources: {cpus: 2, mem: 1GiB, gpus: 0}\n"
                                     "    retries: 2\n"
                                     "    retry_delay: 5s\n"
                                     "    timeout: 10m\n"
                                     "    env: {ZED: z, OMP_NUM_THREADS: 2, A_1: ''}\n"
                                     "    after: []\n"
                                     "  train:\n"
                                     "    cmd: |\n"
                                     "      python3 train.py \\\n"
                                     "        --in data/raw\n"
                                     "    deps:\n"
                                     "      - data/raw\n"
                                     "    outs: [model]\n"
                                     "    after: ingest\n");
    assert_string_equal(p->file, NAME);
    assert_string_equal(p->dir, DIR);
    assert_int_equal(p->executor, SL_EXEC_SLURM);
    assert_true(p->has_limit_cpus && p->has_limit_mem && p->has_limit_gpus);
    assert_int_equal(p->limit.cpus, 8);
    assert_int_equal(p->limit.mem, 16ULL << 30);
    assert_int_equal(p->limit.gpus, 1);
    assert_string_equal(p->slurm_partition, "debug");
    assert_int_equal(p->nstages, 2);

    const struct sl_stage *s = &p->stages[0];
    assert_string_equal(s->name, "ingest");
    assert_string_equal(s->group, "ingest");
    assert_int_equal(s->at.line, 5);
    assert_int_equal(s->at.col, 3);
    assert_string_equal(s->cmd, "python3 ingest.py --out data/raw");
    assert_int_equal(s->cmd_at.line, 6);
    assert_int_equal(s->cmd_at.col, 10);
    assert_int_equal(s->ndeps, 2);
    assert_string_equal(s->deps[0].path, "ingest.py");
    assert_int_equal(s->deps[0].at.line, 7);
    assert_int_equal(s->deps[0].at.col, 12);
    assert_string_equal(s->deps[1].path, "conf");
    assert_int_equal(s->deps[1].at.col, 23);
    assert_int_equal(s->nouts, 1);
    assert_string_equal(s->outs[0].path, "data/raw");
    assert_int_equal(s->outs[0].at.line, 8);
    assert_int_equal(s->outs[0].at.col, 11);

    /* Sorted by key; values as JSON: numbers and bools bare (in JSON's spelling), the rest
     * quoted. */
    static const char *const pk[] = {"e", "lr", "n", "name", "on", "q", "z"};
    static const char *const pv[] = {"1e-3", "0.1", "0.5", "\"adam\"", "true", "\"1\"", "null"};
    assert_int_equal(s->nparams, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(s->params[i].key, pk[i]);
        assert_string_equal(s->params[i].value, pv[i]);
    }
    assert_int_equal(s->params[3].at.line, 9); /* name */
    assert_int_equal(s->params[3].at.col, 14);

    assert_int_equal(s->res.cpus, 2);
    assert_int_equal(s->res.mem, 1ULL << 30);
    assert_int_equal(s->res.gpus, 0);
    assert_int_equal(s->retries, 2);
    assert_true(s->retry_delay_ns == 5000000000LL);
    assert_true(s->timeout_ns == 600000000000LL);
    assert_int_equal(s->nenv, 3);
    assert_string_equal(s->env[0].key, "A_1");
    assert_string_equal(s->env[0].value, "");
    assert_string_equal(s->env[1].key, "OMP_NUM_THREADS");
    assert_string_equal(s->env[1].value, "2");
    assert_string_equal(s->env[2].key, "ZED");
    assert_string_equal(s->env[2].value, "z");
    assert_int_equal(s->env[2].at.line, 14);
    assert_int_equal(s->env[2].at.col, 11);
    assert_int_equal(s->nafter, 0);

    s = &p->stages[1];
    assert_string_equal(s->name, "train");
    assert_string_equal(s->cmd, "python3 train.py \\\n  --in data/raw\n");
    assert_int_equal(s->ndeps, 1);
    assert_string_equal(s->deps[0].path, "data/raw");
    assert_int_equal(s->deps[0].at.line, 21);
    assert_int_equal(s->deps[0].at.col, 9);
    assert_int_equal(s->nafter, 1);
    assert_string_equal(s->after[0].path, "ingest");
    /* Defaults. */
    assert_int_equal(s->res.cpus, 1);
    assert_int_equal(s->res.mem, 0);
    assert_int_equal(s->res.gpus, 0);
    assert_int_equal(s->retries, 0);
    assert_true(s->retry_delay_ns == 1000000000LL);
    assert_true(s->timeout_ns == 0);
    assert_int_equal(s->nparams, 0);
    assert_int_equal(s->nenv, 0);
    assert_null(s->up);
    sl_pipeline_free(p);

    /* The defaults at the top; keys with nothing, or empty lists and mappings, are none. */
    p = parse_ok("stages:\n  a:\n    cmd: x\n    deps:\n    env:\n    params:\n"
                 "  b: {cmd: y, deps: [], outs: [], after: [], env: {}, params: {}}\n"
                 "  c: {cmd: z, params: []}\n");
    assert_int_equal(p->nstages, 3);
    assert_int_equal(p->stages[1].ndeps + p->stages[1].nouts + p->stages[1].nenv, 0);
    assert_int_equal(p->stages[1].nparams + p->stages[2].nparams, 0);
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    assert_int_equal(p->executor, SL_EXEC_LOCAL);
    assert_false(p->has_limit_cpus || p->has_limit_mem || p->has_limit_gpus);
    assert_null(p->slurm_partition);
    assert_int_equal(p->stages[0].ndeps, 0);
    sl_pipeline_free(p);

    /* Only what is given is a limit. */
    p = parse_ok("executor: local\nresources: {mem: 2GiB}\nstages: {a: {cmd: x}}\n");
    assert_false(p->has_limit_cpus);
    assert_true(p->has_limit_mem);
    assert_false(p->has_limit_gpus);
    assert_int_equal(p->limit.mem, 2ULL << 30);
    sl_pipeline_free(p);
    sl_pipeline_free(NULL);
}

static void foreach_list(void **state)
{
    (void)state;
    struct sl_pipeline *p =
        parse_ok("stages:\n"
                 "  prep:\n"
                 "    foreach: [a, b/c, 3]\n"
                 "    cmd: prep ${item} > out/${item}.txt; echo ${HOME} $${item} $$ $x ${nope\n"
                 "    deps: ['in/${item}']\n"
                 "    outs:\n"
                 "      - out/${item}.txt\n"
                 "    env: {WHICH: \"${item}\", HOME2: \"${HOME}\"}\n"
                 "  after:\n"
                 "    cmd: echo done\n"
                 "    after: [prep, prep@a]\n");
    assert_int_equal(p->nstages, 4);
    static const char *const names[] = {"prep@a", "prep@b_c", "prep@3"};
    static const char *const items[] = {"a", "b/c", "3"};
    for (size_t i = 0; i < 3; i++) {
        const struct sl_stage *s = &p->stages[i];
        char want[256];
        assert_string_equal(s->name, names[i]);
        assert_string_equal(s->group, "prep");
        assert_int_equal(s->at.line, 2);
        snprintf(want, sizeof(want),
                 "prep %s > out/%s.txt; echo ${HOME} ${item} $$ $x ${nope", items[i], items[i]);
        assert_string_equal(s->cmd, want);
        snprintf(want, sizeof(want), "in/%s", items[i]);
        assert_string_equal(s->deps[0].path, want);
        snprintf(want, sizeof(want), "out/%s.txt", items[i]);
        assert_string_equal(s->outs[0].path, want);
        assert_int_equal(s->outs[0].at.line, 7);
        assert_int_equal(s->outs[0].at.col, 9);
        assert_string_equal(s->env[0].key, "HOME2");
        assert_string_equal(s->env[0].value, "${HOME}"); /* the shell's, passed through */
        assert_string_equal(s->env[1].key, "WHICH");
        assert_string_equal(s->env[1].value, items[i]);
    }
    assert_string_equal(p->stages[3].name, "after");
    assert_string_equal(p->stages[3].group, "after");

    /* A name, else the first copy of the group. */
    assert_int_equal(sl_pipeline_find(p, "prep@b_c"), 1);
    assert_int_equal(sl_pipeline_find(p, "prep"), 0);
    assert_int_equal(sl_pipeline_find(p, "after"), 3);
    assert_int_equal(sl_pipeline_find(p, "nope"), -1);
    assert_int_equal(sl_pipeline_find(p, "prep@"), -1);

    /* after: a group is each of its copies. */
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    expect_ups(p, "after", "prep@a", "prep@b_c", "prep@3", NULL);
    expect_downs(p, "prep@a", "after", NULL);
    sl_pipeline_free(p);
}

static void foreach_matrix(void **state)
{
    (void)state;
    struct sl_pipeline *p = parse_ok("stages:\n"
                                     "  shard:\n"
                                     "    foreach: {shard: [0, 1], size: [s, m]}\n"
                                     "    cmd: run --shard ${item.shard} --size ${item.size} "
                                     "--tag ${item}\n"
                                     "    outs: out/${item.shard}/${item.size}\n"
                                     "  merge:\n"
                                     "    cmd: merge\n"
                                     "    deps: [out]\n");
    static const char *const names[] = {"shard@0-s", "shard@0-m", "shard@1-s", "shard@1-m"};
    static const char *const cmds[] = {
        "run --shard 0 --size s --tag 0-s", "run --shard 0 --size m --tag 0-m",
        "run --shard 1 --size s --tag 1-s", "run --shard 1 --size m --tag 1-m"};
    static const char *const outs[] = {"out/0/s", "out/0/m", "out/1/s", "out/1/m"};
    assert_int_equal(p->nstages, 5);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(p->stages[i].name, names[i]);
        assert_string_equal(p->stages[i].group, "shard");
        assert_string_equal(p->stages[i].cmd, cmds[i]);
        assert_string_equal(p->stages[i].outs[0].path, outs[i]);
    }
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    /* A dep that is a folder above outs reads each of them. */
    expect_ups(p, "merge", "shard@0-s", "shard@0-m", "shard@1-s", "shard@1-m", NULL);
    sl_pipeline_free(p);

    /* Suffix characters a name cannot hold become '_'. */
    p = parse_ok("stages:\n  x:\n    foreach: {m: [a/b, 'c d'], n: [1]}\n    cmd: ${item.m}\n");
    assert_string_equal(p->stages[0].name, "x@a_b-1");
    assert_string_equal(p->stages[1].name, "x@c_d-1");
    assert_string_equal(p->stages[1].cmd, "c d");
    sl_pipeline_free(p);
}

static void params_from_file(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    write_in(tmp, "params.yaml",
             "train:\n"
             "  lr: 0.001\n"
             "  layers: [64, 32]\n"
             "  opt: {name: adam, beta: .9, nest: {deep: [true, null, \"q\\\"\"]}}\n"
             "seed: 42\n"
             "name: \"run 1\"\n"
             "a.b: dotted\n"
             "flag: yes\n");
    struct sl_pipeline *p = parse_in(tmp, "stages:\n"
                                          "  train:\n"
                                          "    cmd: train --lr ${train.lr} --name '${name}' "
                                          "--layers '${train.layers}' ${seed}x\n"
                                          "    params: [train.lr, seed, name, train.layers, "
                                          "train.opt, a.b, flag]\n");
    const struct sl_stage *s = &p->stages[0];
    static const char *const keys[] = {"a.b", "flag", "name", "seed", "train.layers",
                                       "train.lr", "train.opt"};
    static const char *const vals[] = {
        "\"dotted\"", "\"yes\"", "\"run 1\"", "42", "[64,32]", "0.001",
        "{\"name\":\"adam\",\"beta\":0.9,\"nest\":{\"deep\":[true,null,\"q\\\"\"]}}"};
    assert_int_equal(s->nparams, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(s->params[i].key, keys[i]);
        assert_string_equal(s->params[i].value, vals[i]);
    }
    assert_int_equal(s->params[3].at.line, 4); /* seed */
    assert_int_equal(s->params[3].at.col, 24);
    /* ${KEY}: a scalar as written, a list or mapping as JSON. */
    assert_string_equal(s->cmd, "train --lr 0.001 --name 'run 1' --layers '[64,32]' 42x");
    sl_pipeline_free(p);

    /* The top-level params: names another file, relative to the pipeline's folder. */
    char *conf = join(tmp, "conf");
    assert_int_equal(mkdir(conf, 0755), 0);
    write_in(conf, "p.yaml", "lr: 3\n");
    p = parse_in(tmp, "params: conf/p.yaml\nstages: {t: {cmd: 'x ${lr}', params: lr}}\n");
    assert_string_equal(p->stages[0].params[0].value, "3");
    assert_string_equal(p->stages[0].cmd, "x 3");
    sl_pipeline_free(p);

    /* A params key that is missing: named, with where the pipeline names it and the file. */
    char *pfile = join(tmp, "params.yaml");
    expect_error_in(tmp, "stages:\n  train:\n    cmd: x\n    params: [seed, train.momentum]\n", 4,
                    20, "stage \"train\"", "params key \"train.momentum\" is not in", pfile,
                    NULL);
    expect_error_in(tmp, "stages:\n  train:\n    cmd: x\n    params: [seed, seed]\n", 4, 20,
                    "\"seed\" is given twice", NULL);
    /* train.lr.x walks into a number. */
    expect_error_in(tmp, "stages:\n  t:\n    cmd: x\n    params: train.lr.x\n", 4, 13,
                    "params key \"train.lr.x\"", NULL);
    free(pfile);

    /* A params file that is missing, or not a mapping. */
    pfile = join(conf, "params.yaml");
    expect_error_in(conf, "stages:\n  train:\n    cmd: x\n    params: [lr]\n", 4, 14,
                    "stage \"train\"", "params file", pfile, "does not exist", NULL);
    /* No stage names keys: the file is never read. */
    struct sl_pipeline *q = parse_in(conf, "stages: {a: {cmd: x, params: {lr: 1}}}\n");
    sl_pipeline_free(q);
    write_in(conf, "params.yaml", "- a\n- b\n");
    {
        struct sl_pipeline *r = NULL;
        const char *y = "stages:\n  t:\n    cmd: x\n    params: [a]\n";
        int rc = sl_pipeline_parse(NAME, conf, y, strlen(y), &r);
        assert_int_equal(rc, SL_E_CONFIG);
        char want[PATH_MAX + 16];
        snprintf(want, sizeof(want), "%s:1:1: expected a mapping of params", pfile);
        assert_non_null(strstr(sl_errmsg(rc), want));
    }
    free(pfile);
    free(conf);
    unit_rmtree(tmp);
}

static void params_mapping_form(void **state)
{
    (void)state;
    struct sl_pipeline *p = parse_ok("stages:\n"
                                     "  t:\n"
                                     "    cmd: run --lr ${lr} --opt ${opt} ${list} ${other}\n"
                                     "    params:\n"
                                     "      opt: adam\n"
                                     "      lr: 0.1\n"
                                     "      big: +007.50e+3\n"
                                     "      hex: 0x1F\n"
                                     "      no: no\n"
                                     "      list: [1, a]\n"
                                     "      dq: \"tab\\there\"\n");
    const struct sl_stage *s = &p->stages[0];
    static const char *const keys[] = {"big", "dq", "hex", "list", "lr", "no", "opt"};
    static const char *const vals[] = {"7.50e+3", "\"tab\\there\"", "\"0x1F\"", "[1,\"a\"]",
                                       "0.1",     "\"no\"",         "\"adam\""};
    assert_int_equal(s->nparams, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(s->params[i].key, keys[i]);
        assert_string_equal(s->params[i].value, vals[i]);
    }
    assert_int_equal(s->params[4].at.line, 6);
    assert_int_equal(s->params[4].at.col, 7);
    assert_string_equal(s->cmd, "run --lr 0.1 --opt adam [1,\"a\"] ${other}");
    sl_pipeline_free(p);

    /* Written in another order, the same params. */
    struct sl_pipeline *a = parse_ok("stages: {t: {cmd: x, params: {b: 2, a: 1}}}\n");
    struct sl_pipeline *b = parse_ok("stages: {t: {cmd: x, params: {a: 1, b: 2}}}\n");
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(a->stages[0].params[i].key, b->stages[0].params[i].key);
        assert_string_equal(a->stages[0].params[i].value, b->stages[0].params[i].value);
    }
    sl_pipeline_free(a);
    sl_pipeline_free(b);
}

static void load_from_file(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    char *real = realpath(tmp, NULL);
    assert_non_null(real);
    char *sub = join(tmp, "proj");
    assert_int_equal(mkdir(sub, 0755), 0);
    write_in(sub, "pipeline.yaml", "stages:\n  a:\n    cmd: echo hi\n");
    char *path = join(sub, "pipeline.yaml");

    struct sl_pipeline *p = NULL;
    assert_int_equal(sl_pipeline_load(path, &p), 0);
    char *want = join(real, "proj");
    assert_string_equal(p->dir, want);
    assert_string_equal(p->file, path);
    assert_string_equal(p->stages[0].cmd, "echo hi");
    sl_pipeline_free(p);
    free(want);

    /* Errors name the file as given. */
    write_in(sub, "pipeline.yaml", "stages:\n  a:\n    cmd: x\n    outs: [a, [b]]\n");
    p = (struct sl_pipeline *)0x1;
    int rc = sl_pipeline_load(path, &p);
    assert_int_equal(rc, SL_E_CONFIG);
    assert_ptr_equal(p, (struct sl_pipeline *)0x1);
    char prefix[PATH_MAX + 32];
    snprintf(prefix, sizeof(prefix), "%s:4:15: stage \"a\": outs: expected paths", path);
    if (strncmp(sl_errmsg(rc), prefix, strlen(prefix)) != 0)
        fail_msg("got '%s', expected '%s...'", sl_errmsg(rc), prefix);

    /* Missing: the errno, with the path. */
    char *missing = join(sub, "nope.yaml");
    rc = sl_pipeline_load(missing, &p);
    assert_int_equal(rc, -ENOENT);
    assert_non_null(strstr(sl_errmsg(rc), missing));
    free(missing);

    /* Larger than 16 MiB: refused before parsing. */
    size_t big = (16U << 20) + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, '#', big);
    char *bigpath = join(sub, "big.yaml");
    assert_int_equal(unit_write_file(bigpath, text, big), 0);
    rc = sl_pipeline_load(bigpath, &p);
    assert_int_equal(rc, SL_E_CONFIG);
    assert_non_null(strstr(sl_errmsg(rc), "larger than 16 MiB"));
    free(text);
    free(bigpath);

    free(path);
    free(sub);
    free(real);
    unit_rmtree(tmp);
}

/* ---- what is refused, and where -------------------------------------------------------------- */

static void malformed(void **state)
{
    (void)state;
    expect_error_at("stages: [a, b\nx: 1\n", 2, 2, "invalid YAML", NULL);
    expect_error_at("- a\n- b\n", 1, 1, "expected a mapping", "a list", "stages", NULL);
    expect_error_at("stages:\n  a: echo\n", 2, 6, "stage \"a\"", "expected a mapping", NULL);
    expect_error_at("stages:\n  a:\n    cmd: [x]\n", 3, 10, "stage \"a\": cmd",
                    "a non-empty string", "a list", NULL);
    expect_error_at("stages:\n  a:\n    cmd: ''\n", 3, 10, "cmd", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    deps: {a: 1}\n", 4, 11, "deps",
                    "expected a list of paths", "a mapping", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    env: {1X: a}\n", 4, 11, "env",
                    "\"1X\" is not a variable name", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    env: {X: [a]}\n", 4, 14, "env.X",
                    "expected a value", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    foreach: []\n", 4, 14, "foreach",
                    "at least one item", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    foreach: [[1]]\n", 4, 15, "foreach",
                    "a list", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    foreach: {k: 1}\n", 4, 18, "foreach.k",
                    "expected a list of values", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    foreach: 3\n", 4, 14, "foreach",
                    "a list of items or a mapping of lists", NULL);
    expect_error_at("slurm: {queue: q}\nstages: {a: {cmd: x}}\n", 1, 9,
                    "unknown key \"queue\" in slurm (known: partition)", NULL);
}

static void unknown_and_duplicate_keys(void **state)
{
    (void)state;
    expect_error_at("stages:\n  train:\n    cmd: x\n    retires: 3\n", 4, 5,
                    "unknown key \"retires\" in stage \"train\" (known: cmd, deps, outs, params, "
                    "resources, retries, retry_delay, timeout, env, after, foreach)",
                    NULL);
    expect_error_at("stage:\n  a: {cmd: x}\n", 1, 1,
                    "unknown key \"stage\" (known: executor, resources, slurm, params, stages)",
                    NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    resources: {cpu: 1}\n", 4, 17,
                    "unknown key \"cpu\" in resources of stage \"a\" (known: cpus, mem, gpus)",
                    NULL);
    expect_error_at("resources: {disk: 1}\nstages: {a: {cmd: x}}\n", 1, 13,
                    "unknown key \"disk\" in resources (known: cpus, mem, gpus)", NULL);

    expect_error_at("stages:\n  train:\n    cmd: x\n    deps: [a]\n    cmd: y\n", 5, 5,
                    "stage \"train\": key \"cmd\" is given twice (first at line 3)", NULL);
    expect_error_at("stages:\n  a: {cmd: x}\n  b: {cmd: y}\n  a: {cmd: z}\n", 4, 3,
                    "stage \"a\" is given twice (first at line 2)", NULL);
    expect_error_at("stages: {a: {cmd: x}}\nexecutor: local\nstages: {b: {cmd: y}}\n", 3, 1,
                    "key \"stages\" is given twice (first at line 1)", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    env: {A: 1, B: 2, A: 3}\n", 4, 23,
                    "env variable \"A\" is given twice", NULL);
    expect_error_at("stages:\n  a:\n    cmd: x\n    foreach: {k: [1], k: [2]}\n", 4, 23,
                    "foreach key \"k\" is given twice", NULL);
}

static void bad_values(void **state)
{
    (void)state;
    expect_error_at("stages:\n  train:\n    cmd: x\n    resources: {cpus: 2, mem: lots}\n", 4, 31,
                    "stage \"train\": resources.mem: \"lots\" is not a size (examples: 512MiB, "
                    "2GiB)",
                    NULL);
    expect_error_at("resources: {mem: 1 XB}\nstages: {a: {cmd: x}}\n", 1, 18,
                    "resources.mem: \"1 XB\" is not a size", NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    timeout: soon\n", 4, 14,
                    "stage \"train\": timeout: \"soon\" is not a duration (examples: 30s, 10m, 2h)",
                    NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    timeout: 10\n", 4, 14,
                    "timeout: \"10\" is not a duration", NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    retry_delay: -1\n", 4, 18,
                    "retry_delay: \"-1\" is not a duration", NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    resources: {cpus: two}\n", 4, 23,
                    "stage \"train\": resources.cpus: expected a whole number from 1 to 100000, "
                    "got \"two\"",
                    NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    resources: {cpus: 0}\n", 4, 23,
                    "resources.cpus", "got \"0\"", NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    resources: {cpus: 1.5}\n", 4, 23,
                    "resources.cpus", NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    resources: {gpus: -1}\n", 4, 23,
                    "resources.gpus", "from 0 to", NULL);
    expect_error_at("stages:\n  train:\n    cmd: x\n    retries: lots\n", 4, 14,
                    "retries: expected a whole number from 0 to 1000, got \"lots\"", NULL);
    expect_error_at("executor: slurmm\nstages: {a: {cmd: x}}\n", 1, 11,
                    "executor: expected local or slurm, got \"slurmm\"", NULL);

    /* A params value nested without end is refused, not followed down. */
    char deep[512] = "stages: {a: {cmd: x, params: {v: ";
    size_t first = strlen(deep);
    for (size_t i = 0; i < 80; i++) strcat(deep, "[");
    for (size_t i = 0; i < 80; i++) strcat(deep, "]");
    strcat(deep, "}}}\n");
    expect_error_at(deep, 1, (unsigned)(first + 65 + 1), "nested more than 64 levels", NULL);
}

static void bad_names_and_structure(void **state)
{
    (void)state;
    expect_error_at("stages:\n  a: {cmd: x}\n  bad name!: {cmd: x}\n", 3, 3,
                    "stage name \"bad name!\"", "letters, digits", NULL);
    expect_error_at("stages:\n  a@b: {cmd: x}\n", 2, 3, "stage name \"a@b\"", NULL);
    expect_error_at("stages:\n  train:\n    deps: [a]\n", 2, 3, "stage \"train\": missing cmd",
                    NULL);
    expect_error_at("executor: local\n", 1, 1, "missing stages", NULL);
    expect_error_at("", 1, 1, "missing stages", NULL);
    expect_error_at("# nothing\n", 1, 1, "missing stages", NULL);
    expect_error_at("stages: {}\n", 1, 9, "no stages", NULL);
    expect_error_at("stages: [a]\n", 1, 9, "stages: expected a mapping", "a list", NULL);

    /* Two copies with one name. */
    expect_error_at("stages:\n  x:\n    foreach: [a/b, a_b]\n    cmd: c\n", 3, 20,
                    "stage \"x\": foreach items \"a/b\" and \"a_b\" both make the stage \"x@a_b\"",
                    NULL);
    expect_error_at("stages:\n  x:\n    foreach: {k: [a/b, a_b]}\n    cmd: c\n", 3, 14,
                    "\"a/b\" and \"a_b\"", "x@a_b", NULL);
}

static void bad_substitution(void **state)
{
    (void)state;
    expect_error_at("stages:\n  s:\n    foreach: {shard: [0, 1], size: [a]}\n"
                    "    cmd: run ${item.shard}\n    outs: ['o/${item.x}']\n",
                    5, 12, "stage \"s\": unknown \"${item.x}\" (foreach keys: shard, size)", NULL);
    expect_error_at("stages:\n  s:\n    cmd: run ${item}\n", 3, 10,
                    "stage \"s\": \"${item}\" is used, but the stage has no foreach", NULL);
    expect_error_at("stages:\n  s:\n    cmd: x\n    env: {A: \"${item.k}\"}\n", 4, 14,
                    "\"${item.k}\" is used, but the stage has no foreach", NULL);
    expect_error_at("stages:\n  s:\n    foreach: [a]\n    cmd: x\n    after: ['${item.k}']\n", 5,
                    13, "\"${item.k}\": foreach is a list", NULL);
    /* The escape also protects ${item}. */
    struct sl_pipeline *p = parse_ok("stages:\n  s:\n    cmd: echo $${item} $${HOME}\n");
    assert_string_equal(p->stages[0].cmd, "echo ${item} ${HOME}");
    sl_pipeline_free(p);
}

/* ---- the DAG --------------------------------------------------------------------------------- */

static void dag_edges(void **state)
{
    (void)state;
    struct sl_pipeline *p = parse_ok("stages:\n"
                                     "  ingest: {cmd: i, outs: [data/raw]}\n"
                                     "  feat: {cmd: f, deps: [./data/raw/x.bin], outs: [data/feat/]}\n"
                                     "  all: {cmd: a, deps: [data, src/a.py]}\n"
                                     "  report: {cmd: r, deps: ['../pipe/data//feat/y', /srv/pipe/data/raw], after: [all]}\n"
                                     "  shard: {cmd: s, foreach: [0, 1], after: [ingest], outs: ['sh/${item}']}\n"
                                     "  merge: {cmd: m, after: [shard]}\n"
                                     "  up: {cmd: u, outs: ['s3://b/data/']}\n"
                                     "  down: {cmd: d, deps: ['s3://b/data/x/../y', 's3://c/data']}\n"
                                     "  top: {cmd: t, deps: ['s3://b']}\n");
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    expect_ups(p, "ingest", NULL);
    expect_ups(p, "feat", "ingest", NULL);             /* a path below an out */
    expect_ups(p, "all", "ingest", "feat", NULL);      /* a folder above outs */
    expect_ups(p, "report", "ingest", "feat", "all", NULL); /* relative, absolute, after */
    expect_ups(p, "shard@0", "ingest", NULL);
    expect_ups(p, "merge", "shard@0", "shard@1", NULL); /* after: a group */
    expect_ups(p, "down", "up", NULL);                   /* URIs, their path part normalised */
    expect_ups(p, "top", "up", NULL);
    expect_downs(p, "ingest", "feat", "all", "report", "shard@0", "shard@1", NULL);
    expect_downs(p, "feat", "all", "report", NULL);
    expect_downs(p, "merge", NULL);

    /* Built again, the same (nothing appended twice). */
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    expect_ups(p, "report", "ingest", "feat", "all", NULL);
    expect_downs(p, "ingest", "feat", "all", "report", "shard@0", "shard@1", NULL);
    sl_pipeline_free(p);
}

static void dag_errors(void **state)
{
    (void)state;
    /* Data flows b -> c -> a -> b; named from the stage first in the file. */
    expect_dag_error("stages:\n"
                     "  b: {cmd: b, deps: [a.out], outs: [b.out]}\n"
                     "  a: {cmd: a, deps: [c.out], outs: [a.out]}\n"
                     "  c: {cmd: c, deps: [b.out], outs: [c.out]}\n",
                     2, 3, "cycle: b -> c -> a -> b", NULL);
    expect_dag_error("stages:\n  x: {cmd: x}\n  a: {cmd: a, after: [a]}\n", 3, 3,
                     "cycle: a -> a", NULL);
    expect_dag_error("stages:\n"
                     "  a: {cmd: a, outs: [data/raw]}\n"
                     "  b: {cmd: b, outs: [./data/raw/]}\n",
                     3, 22, "stage \"b\": out \"./data/raw/\" is also an out of stage \"a\" "
                            "(pipeline.yaml:2:22)", NULL);
    expect_dag_error("stages:\n"
                     "  a: {cmd: a, outs: [data/raw]}\n"
                     "  b: {cmd: b, outs: [data/raw/x]}\n",
                     3, 22, "outs \"data/raw\" of stage \"a\" (pipeline.yaml:2:22) and "
                            "\"data/raw/x\" of stage \"b\" overlap", NULL);
    expect_dag_error("stages:\n"
                     "  a: {cmd: a, outs: [data/raw/x]}\n"
                     "  b: {cmd: b, outs: [data]}\n",
                     3, 22, "outs \"data/raw/x\" of stage \"a\" (pipeline.yaml:2:22) and "
                            "\"data\" of stage \"b\" overlap", NULL);
    expect_dag_error("stages:\n  a: {cmd: a, outs: [o, o]}\n", 2, 25,
                     "out \"o\" is given twice", NULL);
    expect_dag_error("stages:\n  a: {cmd: a, deps: [data/raw/x], outs: [data/raw]}\n", 2, 22,
                     "stage \"a\": dep \"data/raw/x\" is inside its own out \"data/raw\"", NULL);
    expect_dag_error("stages:\n  a: {cmd: a, deps: [./o], outs: [o]}\n", 2, 22,
                     "stage \"a\": dep \"./o\" is its own out", NULL);
    expect_dag_error("stages:\n  a: {cmd: a, deps: [data], outs: [data/o]}\n", 2, 22,
                     "dep \"data\" holds its own out \"data/o\"", NULL);
    expect_dag_error("stages:\n  train: {cmd: t}\n  eval: {cmd: e, after: [trian]}\n", 3, 26,
                     "stage \"eval\": after: no stage or group \"trian\"", "\"train\"", NULL);
    expect_dag_error("stages:\n  eval: {cmd: e, after: [zzzzzz]}\n", 2, 26,
                     "no stage or group \"zzzzzz\"", NULL);
}

struct seen {
    const char *dir;
    char paths[8][64];
    size_t n;
};

static bool exists_in(void *arg, const char *path)
{
    struct seen *s = arg;
    if (s->n < 8) snprintf(s->paths[s->n++], sizeof(s->paths[0]), "%s", path);
    char *full = NULL;
    if (path[0] == '/')
        full = strdup(path);
    else if (asprintf(&full, "%s/%s", s->dir, path) < 0)
        return false;
    struct stat st;
    bool ok = full && stat(full, &st) == 0;
    free(full);
    return ok;
}

static void dag_dangling_dep(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    char *src = join(tmp, "src");
    assert_int_equal(mkdir(src, 0755), 0);
    write_in(src, "a.py", "print(1)\n");

    const char *yaml = "stages:\n"
                       "  make: {cmd: m, outs: [data/raw]}\n"
                       "  train:\n"
                       "    cmd: t\n"
                       "    deps: [src/a.py, ./src//, data/raw/part, data/feat]\n";
    struct sl_pipeline *p = parse_in(tmp, yaml);
    struct seen seen = {.dir = tmp};
    int rc = sl_pipeline_dag(p, exists_in, &seen);
    assert_int_equal(rc, SL_E_CONFIG);
    assert_string_equal(sl_errmsg(rc), "pipeline.yaml:5:46: stage \"train\": dep \"data/feat\" "
                                       "does not exist and no stage makes it");
    /* Asked about paths normalised as written, relative ones relative; never about what a
     * stage makes. */
    assert_int_equal(seen.n, 3);
    assert_string_equal(seen.paths[0], "src/a.py");
    assert_string_equal(seen.paths[1], "src");
    assert_string_equal(seen.paths[2], "data/feat");
    assert_int_equal(p->stages[1].nup, 0);

    /* Without a callback, every dep is taken to exist. */
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    expect_ups(p, "train", "make", NULL);
    sl_pipeline_free(p);

    /* Once it exists, fine. */
    char *data = join(tmp, "data");
    assert_int_equal(mkdir(data, 0755), 0);
    write_in(data, "feat", "x");
    p = parse_in(tmp, yaml);
    seen.n = 0;
    assert_int_equal(sl_pipeline_dag(p, exists_in, &seen), 0);
    sl_pipeline_free(p);
    free(data);
    free(src);
    unit_rmtree(tmp);
}

static char *chain_yaml(size_t n, bool close_cycle)
{
    struct sl_buf b = {0};
    assert_int_equal(sl__buf_printf(&b, "stages:\n"), 0);
    for (size_t i = 0; i < n; i++) {
        if (i == 0)
            assert_int_equal(sl__buf_printf(&b, "  s0: {cmd: c, deps: [%s], outs: [f/0]}\n",
                                            close_cycle ? "f/9999" : "in"),
                             0);
        else
            assert_int_equal(sl__buf_printf(&b, "  s%zu: {cmd: c, deps: [f/%zu], outs: [f/%zu]}\n",
                                            i, i - 1, i),
                             0);
    }
    return b.data;
}

static void dag_ten_thousand(void **state)
{
    (void)state;
    /* A chain: each reads what the one before made. */
    char *yaml = chain_yaml(10000, false);
    struct sl_pipeline *p = parse_ok(yaml);
    assert_int_equal(p->nstages, 10000);
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    const struct sl_stage *mid = &p->stages[5000];
    assert_string_equal(mid->name, "s5000");
    assert_int_equal(mid->nup, 1);
    assert_int_equal(mid->up[0], 4999);
    assert_int_equal(mid->ndown, 1);
    assert_int_equal(mid->down[0], 5001);
    assert_int_equal(p->stages[0].nup, 0);
    assert_int_equal(p->stages[9999].ndown, 0);
    sl_pipeline_free(p);
    free(yaml);

    /* The same chain closed into a cycle of ten thousand: found without recursion, named by
     * its ends. */
    yaml = chain_yaml(10000, true);
    p = parse_ok(yaml);
    int rc = sl_pipeline_dag(p, NULL, NULL);
    assert_int_equal(rc, SL_E_CONFIG);
    assert_string_equal(sl_errmsg(rc), "pipeline.yaml:2:3: cycle: s0 -> s1 -> s2 -> s3 -> s4 -> "
                                       "s5 -> s6 -> s7 -> ... (9990 more) -> s9998 -> s9999 -> "
                                       "s0");
    sl_pipeline_free(p);
    free(yaml);

    /* Fan-out and fan-in: ten thousand readers of one out, each writing below parts/, and one
     * stage reading the folder parts. */
    struct sl_buf b = {0};
    assert_int_equal(sl__buf_printf(&b, "stages:\n  src: {cmd: c, outs: [data]}\n"), 0);
    for (size_t i = 0; i < 10000; i++)
        assert_int_equal(sl__buf_printf(&b, "  w%zu: {cmd: c, deps: [data/x], outs: [parts/%zu]}\n",
                                        i, i),
                         0);
    assert_int_equal(sl__buf_printf(&b, "  merge: {cmd: m, deps: [parts/], after: [src]}\n"), 0);
    p = parse_ok(b.data);
    assert_int_equal(sl_pipeline_dag(p, NULL, NULL), 0);
    assert_int_equal(p->stages[0].ndown, 10001);
    const struct sl_stage *merge = &p->stages[10001];
    assert_int_equal(merge->nup, 10001);
    for (size_t i = 0; i < merge->nup; i++) assert_int_equal(merge->up[i], i);
    assert_int_equal(p->stages[5000].nup, 1);
    assert_int_equal(p->stages[5000].ndown, 1);
    assert_int_equal(p->stages[5000].down[0], 10001);
    sl_pipeline_free(p);
    sl__buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_file),
        cmocka_unit_test(foreach_list),
        cmocka_unit_test(foreach_matrix),
        cmocka_unit_test(params_from_file),
        cmocka_unit_test(params_mapping_form),
        cmocka_unit_test(load_from_file),
        cmocka_unit_test(malformed),
        cmocka_unit_test(unknown_and_duplicate_keys),
        cmocka_unit_test(bad_values),
        cmocka_unit_test(bad_names_and_structure),
        cmocka_unit_test(bad_substitution),
        cmocka_unit_test(dag_edges),
        cmocka_unit_test(dag_errors),
        cmocka_unit_test(dag_dangling_dep),
        cmocka_unit_test(dag_ten_thousand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

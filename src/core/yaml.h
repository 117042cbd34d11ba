/*
 * yaml.h - what the readers of YAML files (sluice.yaml in config.c, pipeline.yaml in
 * src/pipeline/file.c) share about libyaml's document nodes: how an error names what it found,
 * and a scalar's text.
 */
#ifndef SL_CORE_YAML_H
#define SL_CORE_YAML_H

#include <yaml.h>

/* What a node is, as an error says what it found ("expected a size, got a list"). */
static inline const char *sl__yaml_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return n->data.scalar.length ? "a value" : "nothing";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

/* A scalar's text (NUL terminated by libyaml), or NULL for another kind of node. */
static inline const char *sl__yaml_scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* Loads text as one YAML document into doc (the caller's: yaml_document_delete). Invalid YAML
 * is SL_E_CONFIG with "NAME:LINE:COL: invalid YAML: ..." recorded, and where the construct it
 * is about began (an unclosed '[' is noticed at the end of the file). */
int sl__yaml_load(const char *name, const char *text, size_t len, yaml_document_t *doc);

#endif /* SL_CORE_YAML_H */

/* yaml.h - YAML documents read into jansson values under the YAML 1.2 core schema (libyaml
 * events), with the line and column of every node for error messages. Used by job specs and by
 * judged.yaml. */
#ifndef COMMON_YAML_H
#define COMMON_YAML_H

#include <jansson.h>
#include <stddef.h>

/* Position of a node in a YAML document: 1-based line and column. */
struct yaml_doc_mark {
    char *path; /* "a.b[2].c" */
    int line, col;
};

struct yaml_doc_marks {
    struct yaml_doc_mark *items;
    size_t n, cap;
};

/* Parses one YAML document into JSON values under the YAML 1.2 core schema (plain scalars:
 * null, true/false, decimal/0x/0o integers, floats, .inf/.nan; quoted scalars are strings;
 * "!!str" forces a string). Anchors, aliases, other tags, non-scalar keys, duplicate keys and
 * more than one document are errors naming "name:line:col". When marks is not NULL it receives
 * each node's position (mapping values: the key's). Returns a new reference or NULL. */
json_t *yaml_doc_parse(const char *buf, size_t len, const char *name, struct yaml_doc_marks *marks,
                       char *errstr, size_t errstr_len);

/* Frees the marks (the struct itself is the caller's). */
void yaml_doc_marks_free(struct yaml_doc_marks *marks);

/* The mark for a path, or NULL. */
const struct yaml_doc_mark *yaml_doc_mark_find(const struct yaml_doc_marks *marks,
                                               const char *path);

#endif

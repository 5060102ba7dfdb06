#!/usr/bin/python3
"""Generates blockd's QMP marshalling code from the qapi/ schema.

usage: qapi-gen.py SCHEMA OUTDIR

The schema uses QEMU's QAPI syntax (a sequence of Python-like dict
literals with '#' comments): enum, struct, union (flat, with 'base' and
'discriminator'), alternate, command, event and include.  One blockd
extension, for free-form parameters such as an nbdkit plugin's:

  { 'map': 'NAME', 'data': 'VALUE-TYPE' }

is a JSON object whose keys are free and whose values all have VALUE-TYPE;
in C an ordered list of {key, value}.  query-qmp-schema shows it as an
object with no fixed members and "additional-members-type": VALUE-TYPE.
A struct member of a map type may be marked
`{ 'type': 'NAME', 'keyval-rest': true }` (and must then be the last
member): on the command line (keyval mode) every key of the enclosing
object that no other member took is added to that map, so
`plugin=data,size=1M` means `args.size=1M`.  QMP input stays strict.

Outputs, in OUTDIR:

  qapi-types.h / qapi-types.c        C types, input visitors (JSON -> C, with
                                     QEMU's error messages), output visitors
                                     (C -> JSON) and free functions
  qapi-commands.h / qapi-commands.c  handler prototypes, marshallers, the
                                     command table, event senders and the
                                     query-qmp-schema data

The runtime these files call: qapi/qapi-visit.h for the types and visitors
(a library below block/, which creates nodes from the generated option
structs), server/qmp/qapi-runtime.h for the commands and events.
"""

import ast
import json
import os
import re
import sys

BUILTINS = {
    # name: (C type, json-type for introspection)
    'str': ('char *', 'string'),
    'int': ('int64_t', 'int'),
    'int8': ('int8_t', 'int'), 'int16': ('int16_t', 'int'),
    'int32': ('int32_t', 'int'), 'int64': ('int64_t', 'int'),
    'uint8': ('uint8_t', 'int'), 'uint16': ('uint16_t', 'int'),
    'uint32': ('uint32_t', 'int'), 'uint64': ('uint64_t', 'int'),
    'size': ('uint64_t', 'int'),
    'number': ('double', 'number'),
    'bool': ('bool', 'boolean'),
    'any': ('JsonNode *', 'value'),
    'null': ('bool', 'null'),
}
# Introspection reports every sized integer as 'int'.
INTROSPECT_BUILTIN = {'str': 'str', 'number': 'number', 'bool': 'bool',
                      'any': 'any', 'null': 'null'}

C_KEYWORDS = set('''auto break case char const continue default do double else
enum extern float for goto if inline int long register restrict return short
signed sizeof static struct switch typedef union unsigned void volatile while
bool true false unix linux errno'''.split())


class SchemaError(Exception):
    pass


# ---------------------------------------------------------------- parsing

def split_expressions(text, fname):
    """Splits schema text into top-level expression strings (comments removed,
    JSON's true/false turned into Python's)."""
    out, cur, depth, i = [], [], 0, 0
    while i < len(text):
        ch = text[i]
        if ch == '#':
            while i < len(text) and text[i] != '\n':
                i += 1
            continue
        if ch == "'":
            j = text.index("'", i + 1)
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if ch.isalpha():
            m = re.match(r'[A-Za-z_]+', text[i:])
            word = m.group(0)
            cur.append({'true': 'True', 'false': 'False'}.get(word, word))
            i += len(word)
            continue
        if ch in '{[':
            depth += 1
        elif ch in '}]':
            depth -= 1
        cur.append(ch)
        if depth == 0 and ch == '}':
            out.append(''.join(cur).strip())
            cur = []
        i += 1
    if ''.join(cur).strip():
        raise SchemaError('%s: trailing text after the last expression' % fname)
    return out


def load_schema(path, seen=None):
    seen = seen if seen is not None else set()
    path = os.path.normpath(path)
    if path in seen:
        return []
    seen.add(path)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    exprs = []
    for src in split_expressions(text, path):
        expr = ast.literal_eval(src)
        if 'include' in expr:
            exprs += load_schema(os.path.join(os.path.dirname(path), expr['include']), seen)
        else:
            exprs.append(expr)
    return exprs


def c_name(name):
    name = re.sub(r'[^A-Za-z0-9_]', '_', name)
    return 'q_' + name if name in C_KEYWORDS else name


def camel_to_upper(value):
    s = c_name(value)
    if value.isupper():
        return s
    new = ''
    for i, ch in enumerate(s):
        if ch.isupper() and i > 0 and s[i - 1] != '_':
            if i < len(s) - 1 and s[i + 1].islower():
                new += '_'
            elif s[i - 1].isdigit():
                new += '_'
        new += ch
    return new.lstrip('_').upper()


class Member:
    def __init__(self, name, typ, optional, features, rest=False):
        self.name, self.type, self.optional, self.features = name, typ, optional, features
        self.rest = rest    # keyval-rest: collects the unused keys (maps only)
        self.c = c_name(name)


class Schema:
    def __init__(self, exprs):
        self.types = {}      # name -> dict(meta=..., ...)
        self.order = []      # type names in definition order
        self.commands = []
        self.events = []
        self.lists = []      # element type names that need a list type
        for b in BUILTINS:
            self.types[b] = {'meta': 'builtin', 'name': b}
        for e in exprs:
            self.define(e)
        self.check()

    def add_type(self, name, info):
        if name in self.types:
            raise SchemaError('type %s defined twice' % name)
        info['name'] = name
        self.types[name] = info
        self.order.append(name)

    def members(self, data, owner):
        out = []
        for key, val in data.items():
            feats, rest = [], False
            if isinstance(val, dict):
                feats = val.get('features', [])
                rest = val.get('keyval-rest', False)
                val = val['type']
            optional = key.startswith('*')
            out.append(Member(key.lstrip('*'), self.type_ref(val), optional, feats, rest))
        if any(m.rest for m in out[:-1]):
            raise SchemaError('%s: a keyval-rest member must be the last one' % owner)
        return out

    def type_ref(self, val):
        """A type reference: a name, or ['Elem'] for a list of Elem."""
        if isinstance(val, list):
            elem = val[0]
            if elem not in self.lists:
                self.lists.append(elem)
            return elem + 'List'
        return val

    def implicit(self, name, data, owner):
        if isinstance(data, str):
            return data
        if not data:
            return None
        self.add_type(name, {'meta': 'object', 'members': self.members(data, name),
                             'implicit': True})
        return name

    def define(self, e):
        if 'enum' in e:
            self.add_type(e['enum'], {'meta': 'enum', 'values': e['data'],
                                      'prefix': e.get('prefix', camel_to_upper(e['enum']))})
        elif 'struct' in e:
            self.add_type(e['struct'], {'meta': 'object',
                                        'members': self.members(e.get('data', {}), e['struct'])})
        elif 'union' in e:
            name = e['union']
            base = e['base']
            base_members = (self.members(base, name) if isinstance(base, dict)
                            else None)
            self.add_type(name, {'meta': 'union', 'base': base, 'base_members': base_members,
                                 'tag': e['discriminator'], 'variants': e['data']})
        elif 'map' in e:
            self.add_type(e['map'], {'meta': 'map', 'value': self.type_ref(e['data'])})
        elif 'alternate' in e:
            self.add_type(e['alternate'], {'meta': 'alternate',
                                           'members': self.members(e['data'], e['alternate'])})
        elif 'command' in e:
            name = e['command']
            arg = self.implicit('q_obj_%s-arg' % name, e.get('data'), name)
            ret = e.get('returns')
            self.commands.append({'name': name, 'arg': arg,
                                  'ret': self.type_ref(ret) if ret is not None else None,
                                  'gen': e.get('gen', True), 'boxed': e.get('boxed', False),
                                  'features': e.get('features', [])})
        elif 'event' in e:
            name = e['event']
            arg = self.implicit('q_obj_%s-arg' % name, e.get('data'), name)
            self.events.append({'name': name, 'arg': arg, 'features': e.get('features', [])})
        else:
            raise SchemaError('unknown expression %r' % e)

    def check(self):
        for elem in self.lists:
            self.add_type(elem + 'List', {'meta': 'list', 'elem': elem})
        for name in self.order:
            t = self.types[name]
            if t['meta'] == 'union':
                if t['base_members'] is None:
                    t['base_members'] = self.types[t['base']]['members']
                tag = [m for m in t['base_members'] if m.name == t['tag']]
                if not tag or self.types[tag[0].type]['meta'] != 'enum':
                    raise SchemaError('%s: discriminator must be an enum member' % name)
                t['tag_enum'] = tag[0].type
                t['tag_c'] = tag[0].c
        for name, t in self.types.items():
            for m in (t.get('members') or []) + (t.get('base_members') or []):
                if m.type not in self.types:
                    raise SchemaError('%s: unknown type %s' % (name, m.type))
                if m.rest and self.types[m.type]['meta'] != 'map':
                    raise SchemaError('%s: keyval-rest member %s is not a map' % (name, m.name))
            if t['meta'] == 'map' and t['value'] not in self.types:
                raise SchemaError('%s: unknown type %s' % (name, t['value']))

    def all_members(self, name):
        t = self.types[name]
        if t['meta'] == 'object':
            return t['members']
        if t['meta'] == 'union':
            return t['base_members']
        return []


# ------------------------------------------------------------ C helpers

def meta(s, name):
    return s.types[name]['meta']


def is_ptr(s, name):
    return meta(s, name) in ('object', 'union', 'alternate', 'list', 'map') or name in ('str', 'any')


def ctype(s, name):
    m = meta(s, name)
    if m == 'builtin':
        return BUILTINS[name][0]
    if m == 'enum':
        return name
    return c_name(name) + ' *'


def in_fn(name):
    return 'qapi_in_' + re.sub(r'[^A-Za-z0-9_]', '_', name)


def out_fn(name):
    return 'qapi_out_' + re.sub(r'[^A-Za-z0-9_]', '_', name)


def free_stmt(s, name, expr):
    m = meta(s, name)
    if name == 'str':
        return 'g_free(%s);' % expr
    if name == 'any':
        return 'if (%s) json_node_unref(%s);' % (expr, expr)
    if m in ('object', 'union', 'alternate', 'list', 'map'):
        return 'qapi_free_%s(%s);' % (c_name(name), expr)
    return None


def enum_const(prefix, value):
    return '%s_%s' % (prefix, re.sub(r'[^A-Za-z0-9_]', '_', value).upper())


def struct_order(s):
    """Type names ordered so that union branches (embedded by value) come first."""
    done, out = set(), []

    def visit(name):
        if name in done:
            return
        done.add(name)
        t = s.types[name]
        if t['meta'] == 'union':
            for branch in t['variants'].values():
                visit(branch)
        out.append(name)
    for name in s.order:
        visit(name)
    return out


def ptr_decl(ct, var):
    """Declares `var` as a pointer to C type `ct`."""
    return '%s*%s' % (ct if ct.endswith('*') else ct + ' ', var)


def c_string(text):
    return json.dumps(text)


# ------------------------------------------------------------ qapi-types

def gen_types_h(s):
    o = ['/* Generated by scripts/qapi-gen.py from the qapi/ schema: do not edit. */',
         '#pragma once', '', '#include "qapi/qapi-visit.h"', '']
    # Forward declarations so that definition order does not matter.
    for name in s.order:
        t = s.types[name]
        if t['meta'] != 'enum':
            o.append('typedef struct %s %s;' % (c_name(name), c_name(name)))
    o.append('')
    for name in s.order:
        t = s.types[name]
        if t['meta'] == 'enum':
            o.append('typedef enum %s {' % name)
            for v in t['values']:
                o.append('    %s,' % enum_const(t['prefix'], v))
            o.append('    %s__MAX,' % t['prefix'])
            o.append('} %s;' % name)
            o.append('extern const char *const %s_str[];' % name)
            o.append('')
    for name in struct_order(s):
        t = s.types[name]
        cn = c_name(name)
        if t['meta'] == 'object':
            o.append('struct %s {' % cn)
            o += member_decls(s, t['members'])
            if not t['members']:
                o.append('    char qapi_dummy_for_empty_struct;')
            o.append('};')
        elif t['meta'] == 'union':
            o.append('struct %s {' % cn)
            o += member_decls(s, t['base_members'])
            o.append('    union {')
            for case, branch in t['variants'].items():
                o.append('        %s %s;' % (c_name(branch), c_name(case)))
            o.append('    } u;')
            o.append('};')
        elif t['meta'] == 'alternate':
            o.append('struct %s {' % cn)
            o.append('    QapiQType type;')
            o.append('    union {')
            for m in t['members']:
                o.append('        %s %s;' % (ctype(s, m.type), m.c))
            o.append('    } u;')
            o.append('};')
        elif t['meta'] == 'list':
            o.append('struct %s {' % cn)
            o.append('    %s *next;' % cn)
            o.append('    %s value;' % ctype(s, t['elem']))
            o.append('};')
        elif t['meta'] == 'map':
            o.append('struct %s {    /* one key: value pair, in input order */' % cn)
            o.append('    %s *next;' % cn)
            o.append('    char *key;')
            o.append('    %s value;' % ctype(s, t['value']))
            o.append('};')
        else:
            continue
        o.append('')
    o.append('/* Input visitors: JSON -> C, QEMU\'s messages; false + error on bad input. */')
    for name in s.order:
        t = s.types[name]
        o.append('bool %s(QapiIn *in, const char *path, JsonNode *node, %s, GError **errp);'
                 % (in_fn(name), ptr_decl(ctype(s, name), 'out')))
        if t['meta'] in ('object', 'union'):
            o.append('bool qapi_in_members_%s(QapiIn *in, const char *path, JsonObject *obj, '
                     'GHashTable *used, %s *out, GError **errp);' % (c_name(name), c_name(name)))
        if t['meta'] == 'map':
            o.append('/* Appends the keys of `obj` not in `used` (keyval-rest). */')
            o.append('bool qapi_in_rest_%s(QapiIn *in, const char *path, JsonObject *obj, '
                     'GHashTable *used, %s **out, GError **errp);' % (c_name(name), c_name(name)))
    o.append('')
    o.append('/* Output visitors: C -> a new JSON node. */')
    for name in s.order:
        o.append('JsonNode *%s(%s%s);' % (out_fn(name), 'const ' if is_ptr(s, name) else '',
                                          ctype(s, name)))
        if meta(s, name) in ('object', 'union'):
            o.append('void qapi_out_members_%s(JsonObject *obj, const %s *v);' % (c_name(name), c_name(name)))
    o.append('')
    o.append('/* Free functions (NULL is fine). */')
    for name in s.order:
        if meta(s, name) in ('object', 'union', 'alternate', 'list', 'map'):
            cn = c_name(name)
            o.append('void qapi_free_%s(%s *v);' % (cn, cn))
            o.append('G_DEFINE_AUTOPTR_CLEANUP_FUNC(%s, qapi_free_%s)' % (cn, cn))
    o.append('')
    return '\n'.join(o)


def member_decls(s, members):
    o = []
    for m in members:
        if m.optional:
            o.append('    bool has_%s;' % m.c)
        o.append('    %s %s;' % (ctype(s, m.type), m.c))
    return o


def gen_member_in(s, m, o, indent='    '):
    o.append(indent + '{')
    o.append(indent + '    JsonNode *n = json_object_get_member(obj, "%s");' % m.name)
    o.append(indent + '    if (n) {')
    o.append(indent + '        g_autofree char *p = qapi_path(path, "%s");' % m.name)
    o.append(indent + '        g_hash_table_add(used, (gpointer)"%s");' % m.name)
    o.append(indent + '        if (!%s(in, p, n, &out->%s, errp))' % (in_fn(m.type), m.c))
    o.append(indent + '            return false;')
    if m.optional:
        o.append(indent + '        out->has_%s = true;' % m.c)
    if not m.optional:
        o.append(indent + '    } else {')
        o.append(indent + '        qapi_error_missing(path, "%s", errp);' % m.name)
        o.append(indent + '        return false;')
    o.append(indent + '    }')
    if m.rest:
        o.append(indent + '    if (in->keyval) {')
        o.append(indent + '        if (!qapi_in_rest_%s(in, path, obj, used, &out->%s, errp))'
                 % (c_name(m.type), m.c))
        o.append(indent + '            return false;')
        if m.optional:
            o.append(indent + '        out->has_%s = out->%s != NULL;' % (m.c, m.c))
        o.append(indent + '    }')
    o.append(indent + '}')


def gen_types_c(s):
    o = ['/* Generated by scripts/qapi-gen.py from the qapi/ schema: do not edit. */',
         '#include "qapi-types.h"', '', '#include <string.h>', '']
    for name in s.order:
        if meta(s, name) in ('object', 'union'):
            o.append('static void qapi_free_members_%s(%s *v);' % (c_name(name), c_name(name)))
    o.append('')
    for name in s.order:
        t = s.types[name]
        cn = c_name(name)
        m = t['meta']
        if m == 'enum':
            o.append('const char *const %s_str[] = {' % name)
            o += ['    %s,' % c_string(v) for v in t['values']]
            o.append('    NULL,')
            o.append('};')
            o.append('')
            o.append('bool %s(QapiIn *in, const char *path, JsonNode *node, %s *out, GError **errp)'
                     % (in_fn(name), name))
            o.append('{')
            o.append('    int v = qapi_in_enum(in, path, node, %s_str, errp);' % name)
            o.append('    if (v < 0)')
            o.append('        return false;')
            o.append('    *out = (%s)v;' % name)
            o.append('    return true;')
            o.append('}')
            o.append('')
            o.append('JsonNode *%s(%s v)' % (out_fn(name), name))
            o.append('{')
            o.append('    return qapi_out_str(%s_str[v]);' % name)
            o.append('}')
            o.append('')
        elif m in ('object', 'union'):
            members = s.all_members(name)
            o.append('bool qapi_in_members_%s(QapiIn *in, const char *path, JsonObject *obj, '
                     'GHashTable *used, %s *out, GError **errp)' % (cn, cn))
            o.append('{')
            for mem in members:
                gen_member_in(s, mem, o)
            if m == 'union':
                o.append('    switch (out->%s) {' % t['tag_c'])
                prefix = s.types[t['tag_enum']]['prefix']
                for case, branch in t['variants'].items():
                    o.append('    case %s:' % enum_const(prefix, case))
                    o.append('        return qapi_in_members_%s(in, path, obj, used, &out->u.%s, errp);'
                             % (c_name(branch), c_name(case)))
                o.append('    default:')
                o.append('        return true;')
                o.append('    }')
            else:
                o.append('    return true;')
            o.append('}')
            o.append('')
            o.append('bool %s(QapiIn *in, const char *path, JsonNode *node, %s **out, GError **errp)'
                     % (in_fn(name), cn))
            o.append('{')
            o.append('    if (!JSON_NODE_HOLDS_OBJECT(node)) {')
            o.append('        qapi_error_type(path, "object", errp);')
            o.append('        return false;')
            o.append('    }')
            o.append('    JsonObject *obj = json_node_get_object(node);')
            o.append('    %s *v = g_new0(%s, 1);' % (cn, cn))
            o.append('    GHashTable *used = g_hash_table_new(g_str_hash, g_str_equal);')
            o.append('    bool ok = qapi_in_members_%s(in, path, obj, used, v, errp) &&' % cn)
            o.append('              qapi_check_all_used(path, obj, used, errp);')
            o.append('    g_hash_table_destroy(used);')
            o.append('    if (!ok) {')
            o.append('        qapi_free_%s(v);' % cn)
            o.append('        return false;')
            o.append('    }')
            o.append('    *out = v;')
            o.append('    return true;')
            o.append('}')
            o.append('')
            # output
            o.append('void qapi_out_members_%s(JsonObject *obj, const %s *v)' % (cn, cn))
            o.append('{')
            for mem in members:
                cond = 'if (v->has_%s) ' % mem.c if mem.optional else ''
                o.append('    %sjson_object_set_member(obj, "%s", %s(v->%s));'
                         % (cond, mem.name, out_fn(mem.type), mem.c))
            if m == 'union':
                o.append('    switch (v->%s) {' % t['tag_c'])
                prefix = s.types[t['tag_enum']]['prefix']
                for case, branch in t['variants'].items():
                    o.append('    case %s:' % enum_const(prefix, case))
                    o.append('        qapi_out_members_%s(obj, &v->u.%s);' % (c_name(branch), c_name(case)))
                    o.append('        break;')
                o.append('    default:')
                o.append('        break;')
                o.append('    }')
            o.append('}')
            o.append('')
            o.append('JsonNode *%s(const %s *v)' % (out_fn(name), cn))
            o.append('{')
            o.append('    JsonObject *obj = json_object_new();')
            o.append('    if (v)')
            o.append('        qapi_out_members_%s(obj, v);' % cn)
            o.append('    return qapi_node_take_object(obj);')
            o.append('}')
            o.append('')
            # free
            o.append('static void qapi_free_members_%s(%s *v)' % (cn, cn))
            o.append('{')
            for mem in members:
                st = free_stmt(s, mem.type, 'v->%s' % mem.c)
                if st:
                    o.append('    %s' % st)
            if m == 'union':
                o.append('    switch (v->%s) {' % t['tag_c'])
                prefix = s.types[t['tag_enum']]['prefix']
                for case, branch in t['variants'].items():
                    o.append('    case %s:' % enum_const(prefix, case))
                    o.append('        qapi_free_members_%s(&v->u.%s);' % (c_name(branch), c_name(case)))
                    o.append('        break;')
                o.append('    default:')
                o.append('        break;')
                o.append('    }')
            o.append('    (void)v;')
            o.append('}')
            o.append('')
            o.append('void qapi_free_%s(%s *v)' % (cn, cn))
            o.append('{')
            o.append('    if (!v)')
            o.append('        return;')
            o.append('    qapi_free_members_%s(v);' % cn)
            o.append('    g_free(v);')
            o.append('}')
            o.append('')
        elif m == 'alternate':
            o.append('bool %s(QapiIn *in, const char *path, JsonNode *node, %s **out, GError **errp)'
                     % (in_fn(name), cn))
            o.append('{')
            o.append('    %s *v = g_new0(%s, 1);' % (cn, cn))
            o.append('    bool ok = false;')
            o.append('    v->type = qapi_qtype_of(node);')
            o.append('    switch (v->type) {')
            by_qtype = {}
            for mem in t['members']:
                mm = meta(s, mem.type)
                if mm in ('object', 'union'):
                    q = 'QAPI_QTYPE_QDICT'
                elif mm == 'list':
                    q = 'QAPI_QTYPE_QLIST'
                elif mem.type == 'str' or mm == 'enum':
                    q = 'QAPI_QTYPE_QSTRING'
                elif mem.type == 'bool':
                    q = 'QAPI_QTYPE_QBOOL'
                elif mem.type == 'null':
                    q = 'QAPI_QTYPE_QNULL'
                else:
                    q = 'QAPI_QTYPE_QNUM'
                by_qtype[q] = mem
            for q, mem in by_qtype.items():
                o.append('    case %s:' % q)
                o.append('        ok = %s(in, path, node, &v->u.%s, errp);' % (in_fn(mem.type), mem.c))
                o.append('        break;')
            o.append('    default:')
            o.append('        qapi_error_type(qapi_path_leaf(path), "%s", errp);' % name)
            o.append('        break;')
            o.append('    }')
            o.append('    if (!ok) {')
            o.append('        v->type = QAPI_QTYPE_NONE;')
            o.append('        qapi_free_%s(v);' % cn)
            o.append('        return false;')
            o.append('    }')
            o.append('    *out = v;')
            o.append('    return true;')
            o.append('}')
            o.append('')
            o.append('JsonNode *%s(const %s *v)' % (out_fn(name), cn))
            o.append('{')
            o.append('    switch (v->type) {')
            for q, mem in by_qtype.items():
                o.append('    case %s:' % q)
                o.append('        return %s(v->u.%s);' % (out_fn(mem.type), mem.c))
            o.append('    default:')
            o.append('        return json_node_init_null(json_node_alloc());')
            o.append('    }')
            o.append('}')
            o.append('')
            o.append('void qapi_free_%s(%s *v)' % (cn, cn))
            o.append('{')
            o.append('    if (!v)')
            o.append('        return;')
            o.append('    switch (v->type) {')
            for q, mem in by_qtype.items():
                st = free_stmt(s, mem.type, 'v->u.%s' % mem.c)
                if st:
                    o.append('    case %s:' % q)
                    o.append('        %s' % st)
                    o.append('        break;')
            o.append('    default:')
            o.append('        break;')
            o.append('    }')
            o.append('    g_free(v);')
            o.append('}')
            o.append('')
        elif m == 'map':
            gen_map_c(s, name, o)
        elif m == 'list':
            elem = t['elem']
            o.append('bool %s(QapiIn *in, const char *path, JsonNode *node, %s **out, GError **errp)'
                     % (in_fn(name), cn))
            o.append('{')
            o.append('    if (!JSON_NODE_HOLDS_ARRAY(node)) {')
            o.append('        qapi_error_type(path, "array", errp);')
            o.append('        return false;')
            o.append('    }')
            o.append('    JsonArray *arr = json_node_get_array(node);')
            o.append('    %s *head = NULL, **tail = &head;' % cn)
            o.append('    for (guint i = 0; i < json_array_get_length(arr); i++) {')
            o.append('        %s *e = g_new0(%s, 1);' % (cn, cn))
            o.append('        *tail = e;')
            o.append('        tail = &e->next;')
            # QEMU names elements 'a[0]' on QMP but 'a.0' on the command line.
            o.append('        g_autofree char *p = g_strdup_printf(in && in->keyval ? "%s.%u" : "%s[%u]", path, i);')
            o.append('        if (!%s(in, p, json_array_get_element(arr, i), &e->value, errp)) {' % in_fn(elem))
            o.append('            qapi_free_%s(head);' % cn)
            o.append('            return false;')
            o.append('        }')
            o.append('    }')
            o.append('    *out = head;')
            o.append('    return true;')
            o.append('}')
            o.append('')
            o.append('JsonNode *%s(const %s *v)' % (out_fn(name), cn))
            o.append('{')
            o.append('    JsonArray *arr = json_array_new();')
            o.append('    for (; v; v = v->next)')
            o.append('        json_array_add_element(arr, %s(v->value));' % out_fn(elem))
            o.append('    return qapi_node_take_array(arr);')
            o.append('}')
            o.append('')
            o.append('void qapi_free_%s(%s *v)' % (cn, cn))
            o.append('{')
            o.append('    while (v) {')
            o.append('        %s *next = v->next;' % cn)
            st = free_stmt(s, elem, 'v->value')
            if st:
                o.append('        %s' % st)
            o.append('        g_free(v);')
            o.append('        v = next;')
            o.append('    }')
            o.append('}')
            o.append('')
    return '\n'.join(o)


def gen_map_c(s, name, o):
    """Input/output visitors and free function of a map type."""
    cn = c_name(name)
    val = s.types[name]['value']
    o.append('/* Adds key: node to the end of the list at *tail; false + error if the value is bad. */')
    o.append('static bool qapi_map_add_%s(QapiIn *in, const char *path, const char *key, JsonNode *node, '
             '%s ***tail, GError **errp)' % (cn, cn))
    o.append('{')
    o.append('    %s *e = g_new0(%s, 1);' % (cn, cn))
    o.append('    e->key = g_strdup(key);')
    o.append('    **tail = e;')
    o.append('    *tail = &e->next;')
    o.append('    g_autofree char *p = qapi_path(path, key);')
    o.append('    return %s(in, p, node, &e->value, errp);' % in_fn(val))
    o.append('}')
    o.append('')
    o.append('bool %s(QapiIn *in, const char *path, JsonNode *node, %s **out, GError **errp)'
             % (in_fn(name), cn))
    o.append('{')
    o.append('    if (!JSON_NODE_HOLDS_OBJECT(node)) {')
    o.append('        qapi_error_type(path, "object", errp);')
    o.append('        return false;')
    o.append('    }')
    o.append('    JsonObject *obj = json_node_get_object(node);')
    o.append('    %s *head = NULL, **tail = &head;' % cn)
    o.append('    GList *keys = json_object_get_members(obj);   /* in input order */')
    o.append('    bool ok = true;')
    o.append('    for (GList *l = keys; l && ok; l = l->next)')
    o.append('        ok = qapi_map_add_%s(in, path, l->data, json_object_get_member(obj, l->data), &tail, errp);'
             % cn)
    o.append('    g_list_free(keys);')
    o.append('    if (!ok) {')
    o.append('        qapi_free_%s(head);' % cn)
    o.append('        return false;')
    o.append('    }')
    o.append('    *out = head;')
    o.append('    return true;')
    o.append('}')
    o.append('')
    o.append('bool qapi_in_rest_%s(QapiIn *in, const char *path, JsonObject *obj, GHashTable *used, '
             '%s **out, GError **errp)' % (cn, cn))
    o.append('{')
    o.append('    %s **tail = out;' % cn)
    o.append('    while (*tail)')
    o.append('        tail = &(*tail)->next;')
    o.append('    GList *keys = json_object_get_members(obj);')
    o.append('    bool ok = true;')
    o.append('    for (GList *l = keys; l && ok; l = l->next) {')
    o.append('        const char *key = l->data;')
    o.append('        if (g_hash_table_contains(used, key))')
    o.append('            continue;')
    o.append('        for (%s *e = *out; e && ok; e = e->next)' % cn)
    o.append('            if (strcmp(e->key, key) == 0) {')
    o.append('                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, '
             '"Parameter \'%s\' is given twice", key);')
    o.append('                ok = false;')
    o.append('            }')
    o.append('        if (ok)')
    o.append('            ok = qapi_map_add_%s(in, path, key, json_object_get_member(obj, key), &tail, errp);'
             % cn)
    o.append('        g_hash_table_add(used, (gpointer)key);')
    o.append('    }')
    o.append('    g_list_free(keys);')
    o.append('    return ok;')
    o.append('}')
    o.append('')
    o.append('JsonNode *%s(const %s *v)' % (out_fn(name), cn))
    o.append('{')
    o.append('    JsonObject *obj = json_object_new();')
    o.append('    for (; v; v = v->next)')
    o.append('        json_object_set_member(obj, v->key, %s(v->value));' % out_fn(val))
    o.append('    return qapi_node_take_object(obj);')
    o.append('}')
    o.append('')
    o.append('void qapi_free_%s(%s *v)' % (cn, cn))
    o.append('{')
    o.append('    while (v) {')
    o.append('        %s *next = v->next;' % cn)
    o.append('        g_free(v->key);')
    st = free_stmt(s, val, 'v->value')
    if st:
        o.append('        %s' % st)
    o.append('        g_free(v);')
    o.append('        v = next;')
    o.append('    }')
    o.append('}')
    o.append('')


# ------------------------------------------------------------ introspection

class Introspector:
    """Builds the SchemaInfo list with QEMU's masked type names."""

    def __init__(self, s):
        self.s = s
        self.names = {}
        self.entries = []
        self.pending = []
        self.empty_used = False

    def name_of(self, typ):
        if typ is None:
            self.empty_used = True
            return '0'
        t = self.s.types[typ]
        if t['meta'] == 'builtin':
            return INTROSPECT_BUILTIN.get(typ, 'int')
        if t['meta'] == 'list':
            return '[%s]' % self.name_of(t['elem'])
        if typ not in self.names:
            self.names[typ] = str(len(self.names) + 1)
            self.pending.append(typ)
        return self.names[typ]

    def member(self, m):
        e = {'name': m.name, 'type': self.name_of(m.type)}
        if m.optional:
            e['default'] = None
        if m.features:
            e['features'] = m.features
        return e

    def describe(self, typ):
        t = self.s.types[typ]
        name = self.names[typ]
        if t['meta'] == 'enum':
            return {'name': name, 'meta-type': 'enum', 'values': t['values'],
                    'members': [{'name': v} for v in t['values']]}
        if t['meta'] == 'object':
            return {'name': name, 'meta-type': 'object',
                    'members': [self.member(m) for m in t['members']]}
        if t['meta'] == 'union':
            return {'name': name, 'meta-type': 'object',
                    'members': [self.member(m) for m in t['base_members']],
                    'tag': t['tag'],
                    'variants': [{'case': c, 'type': self.name_of(b)}
                                 for c, b in t['variants'].items()]}
        if t['meta'] == 'map':
            # QEMU's SchemaInfo has no maps: an object without fixed members,
            # plus the type every member has.
            return {'name': name, 'meta-type': 'object', 'members': [],
                    'additional-members-type': self.name_of(t['value'])}
        if t['meta'] == 'alternate':
            return {'name': name, 'meta-type': 'alternate',
                    'members': [{'type': self.name_of(m.type)} for m in t['members']]}
        raise SchemaError('cannot introspect %s' % typ)

    def build(self):
        entries = []
        for c in self.s.commands:
            e = {'name': c['name'], 'meta-type': 'command',
                 'arg-type': self.name_of(c['arg']), 'ret-type': self.name_of(c['ret'])}
            if c['features']:
                e['features'] = c['features']
            entries.append(e)
        for ev in self.s.events:
            e = {'name': ev['name'], 'meta-type': 'event', 'arg-type': self.name_of(ev['arg'])}
            if ev['features']:
                e['features'] = ev['features']
            entries.append(e)
        arrays = set()
        while self.pending:
            typ = self.pending.pop(0)
            entries.append(self.describe(typ))
        # Array types, once each, for every list reachable from the entries.
        for e in list(entries):
            for ref in self.type_refs(e):
                if ref.startswith('[') and ref not in arrays:
                    arrays.add(ref)
                    entries.append({'name': ref, 'meta-type': 'array', 'element-type': ref[1:-1]})
        if self.empty_used:
            entries.append({'name': '0', 'meta-type': 'object', 'members': []})
        for b, jt in (('str', 'string'), ('int', 'int'), ('bool', 'boolean'),
                      ('number', 'number'), ('null', 'null'), ('any', 'value')):
            entries.append({'name': b, 'meta-type': 'builtin', 'json-type': jt})
        return entries

    @staticmethod
    def type_refs(e):
        refs = []
        for key in ('arg-type', 'ret-type', 'element-type', 'additional-members-type'):
            if key in e:
                refs.append(e[key])
        for m in e.get('members', []):
            if 'type' in m:
                refs.append(m['type'])
        for v in e.get('variants', []):
            refs.append(v['type'])
        return refs


# ------------------------------------------------------------ commands

def gen_commands_h(s):
    o = ['/* Generated by scripts/qapi-gen.py from the qapi/ schema: do not edit. */',
         '#pragma once', '', '#include "qapi-types.h"',
         '#include "server/qmp/qapi-runtime.h"', '',
         '/* The command table, ending with a NULL name. */',
         'extern const QmpCommand qmp_commands[];',
         '/* query-qmp-schema\'s answer as JSON text. */',
         'extern const char qapi_introspection_json[];', '',
         '/* Command handlers (server/qmp/cmd-*.c): true, or false + error. */']
    for c in s.commands:
        if not c['gen']:
            o.append('void qmp_marshal_%s(QmpSession *session, JsonObject *args, JsonNode **ret, '
                     'GError **errp);' % c_name(c['name']))
            continue
        o.append(handler_proto(s, c) + ';')
    o.append('')
    o.append('/* Event senders: thread-safe, queued to the main loop. */')
    for ev in s.events:
        if ev['arg']:
            o.append('void qapi_event_send_%s(const %s *data);' % (c_name(ev['name'].lower()),
                                                               c_name(ev['arg'])))
        else:
            o.append('void qapi_event_send_%s(void);' % c_name(ev['name'].lower()))
    o.append('')
    return '\n'.join(o)


def handler_proto(s, c):
    args = ['QmpSession *session']
    if c['arg']:
        args.append('%s *args' % c_name(c['arg']))
    if c['ret']:
        args.append(ptr_decl(ctype(s, c['ret']), 'ret'))
    args.append('GError **errp')
    return 'bool qmp_%s(%s)' % (c_name(c['name']), ', '.join(args))


def gen_commands_c(s, introspection):
    o = ['/* Generated by scripts/qapi-gen.py from the qapi/ schema: do not edit. */',
         '#include "qapi-commands.h"', '']
    for c in s.commands:
        if not c['gen']:
            continue
        cn = c_name(c['name'])
        o.append('static void qmp_marshal_%s(QmpSession *session, JsonObject *args, '
                 'JsonNode **ret, GError **errp)' % cn)
        o.append('{')
        call = ['session']
        if c['arg']:
            ac = c_name(c['arg'])
            o.append('    QapiIn in = { .keyval = false };')
            o.append('    g_autoptr(%s) arg = NULL;' % ac)
            o.append('    JsonNode *node = json_node_init_object(json_node_alloc(), args);')
            o.append('    bool ok = %s(&in, "", node, &arg, errp);' % in_fn(c['arg']))
            o.append('    json_node_unref(node);')
            o.append('    if (!ok)')
            o.append('        return;')
            call.append('arg')
        else:
            o.append('    if (!qapi_check_no_args(args, errp))')
            o.append('        return;')
        if c['ret']:
            rt = ctype(s, c['ret'])
            o.append('    %s%sresult = %s;' % (rt, '' if rt.endswith('*') else ' ',
                                             'NULL' if is_ptr(s, c['ret']) else '0'))
            call.append('&result')
        call.append('errp')
        o.append('    if (!qmp_%s(%s))' % (cn, ', '.join(call)))
        o.append('        return;')
        if c['ret']:
            o.append('    *ret = %s(result);' % out_fn(c['ret']))
            st = free_stmt(s, c['ret'], 'result')
            if st:
                o.append('    %s' % st)
        else:
            o.append('    *ret = qapi_node_take_object(json_object_new());')
        o.append('}')
        o.append('')
    o.append('const QmpCommand qmp_commands[] = {')
    for c in s.commands:
        o.append('    { "%s", qmp_marshal_%s },' % (c['name'], c_name(c['name'])))
    o.append('    { NULL, NULL },')
    o.append('};')
    o.append('')
    for ev in s.events:
        en = c_name(ev['name'].lower())
        if ev['arg']:
            o.append('void qapi_event_send_%s(const %s *data)' % (en, c_name(ev['arg'])))
            o.append('{')
            o.append('    JsonNode *node = %s(data);' % out_fn(ev['arg']))
            o.append('    qmp_event_emit("%s", json_node_get_object(node));' % ev['name'])
            o.append('    json_node_unref(node);')
        else:
            o.append('void qapi_event_send_%s(void)' % en)
            o.append('{')
            o.append('    qmp_event_emit("%s", NULL);' % ev['name'])
        o.append('}')
        o.append('')
    text = json.dumps(introspection, separators=(',', ':'))
    o.append('const char qapi_introspection_json[] =')
    for i in range(0, len(text), 100):
        o.append('    %s' % c_string(text[i:i + 100]))
    o.append('    ;')
    o.append('')
    return '\n'.join(o)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    schema_path, outdir = sys.argv[1], sys.argv[2]
    try:
        s = Schema(load_schema(schema_path))
        introspection = Introspector(s).build()
    except (SchemaError, SyntaxError, ValueError, KeyError) as e:
        sys.exit('qapi-gen.py: %s' % e)
    files = {
        'qapi-types.h': gen_types_h(s),
        'qapi-types.c': gen_types_c(s),
        'qapi-commands.h': gen_commands_h(s),
        'qapi-commands.c': gen_commands_c(s, introspection),
    }
    os.makedirs(outdir, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(outdir, name)
        # Only rewrite changed files so that ninja does not rebuild needlessly.
        old = None
        if os.path.exists(path):
            with open(path, encoding='utf-8') as f:
                old = f.read()
        if old != text:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(text)


if __name__ == '__main__':
    main()

"""The filter expression language's grammar (lark, LALR): the one place its syntax is written down."""

# Keywords are case-insensitive and always keywords (the lexer is context-free): a field named
# like one is written in backquotes, `in`. Operators outrank keywords (so "!=" is never "!" and
# "="), keywords outrank names ("in_stock" is a name: a keyword ends at a word boundary).
GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: unary (AND unary)*
?unary: NOT unary                -> not_expr
      | "(" or_expr ")"
      | predicate
predicate: field OP value        -> compare
         | field IN value        -> in_list
         | field NOT IN value    -> not_in_list
         | field CONTAINS value  -> contains
         | EXISTS field          -> exists
         | field LIKE value      -> like
field: NAME | QNAME
?value: STRING | NUMBER | TRUE | FALSE | list
list: LSQB [value ("," value)* ","?] "]"

OP.3: "==" | "!=" | "<=" | ">=" | "<" | ">"
OR.2: /or\b/i | "||"
AND.2: /and\b/i | "&&"
NOT.2: /not\b/i | "!"
IN.2: /in\b/i
CONTAINS.2: /contains\b/i
EXISTS.2: /exists\b/i
LIKE.2: /like\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
LSQB: "["
NAME.1: /[A-Za-z_][A-Za-z0-9_]*/
QNAME: /`(\\.|[^`\\])*`/
STRING: /"(\\.|[^"\\])*"/ | /'(\\.|[^'\\])*'/
NUMBER: /[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(?![A-Za-z0-9_.])/

%ignore /[ \t\r\n]+/
"""

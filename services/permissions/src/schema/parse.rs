//! Lexer and parser of the schema language (spec "Schema language").
//!
//! Positions are 1-based; columns count Unicode scalar values. The parser stops at the first
//! syntax error (reported as `SYNTAX`), but records the structural errors it can detect while
//! parsing (`MIXED_OPERATORS`, `WILDCARD_SUBJECT_RELATION`, nesting `LIMIT_EXCEEDED`) and goes on.

use super::{Code, SchemaError};

/// Maximum nesting of parenthesised expressions.
pub const MAX_NESTING: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Colon,
    Pipe,
    Hash,
    Eq,
    Plus,
    Amp,
    Minus,
    Arrow,
    Star,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Pipe => "`|`".into(),
            Tok::Hash => "`#`".into(),
            Tok::Eq => "`=`".into(),
            Tok::Plus => "`+`".into(),
            Tok::Amp => "`&`".into(),
            Tok::Minus => "`-`".into(),
            Tok::Arrow => "`->`".into(),
            Tok::Star => "`*`".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// A 1-based position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    pos: Pos,
}

fn lex(src: &str) -> Result<Vec<Token>, SchemaError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let advance = |i: &mut usize, line: &mut u32, col: &mut u32, c: char| {
        *i += 1;
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, column: col };
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, c);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                let ch = chars[i];
                advance(&mut i, &mut line, &mut col, ch);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            advance(&mut i, &mut line, &mut col, '/');
            advance(&mut i, &mut line, &mut col, '*');
            let mut closed = false;
            while i < chars.len() {
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    advance(&mut i, &mut line, &mut col, '*');
                    advance(&mut i, &mut line, &mut col, '/');
                    closed = true;
                    break;
                }
                let ch = chars[i];
                advance(&mut i, &mut line, &mut col, ch);
            }
            if !closed {
                return Err(SchemaError::new(Code::Syntax, pos, "unterminated block comment"));
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            let mut s = String::new();
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                s.push(chars[i]);
                let ch = chars[i];
                advance(&mut i, &mut line, &mut col, ch);
            }
            out.push(Token { tok: Tok::Ident(s), pos });
            continue;
        }
        let tok = match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ':' => Tok::Colon,
            '|' => Tok::Pipe,
            '#' => Tok::Hash,
            '=' => Tok::Eq,
            '+' => Tok::Plus,
            '&' => Tok::Amp,
            '*' => Tok::Star,
            '-' if chars.get(i + 1) == Some(&'>') => {
                advance(&mut i, &mut line, &mut col, '-');
                Tok::Arrow
            }
            '-' => Tok::Minus,
            other => {
                return Err(SchemaError::new(Code::Syntax, pos, format!("unexpected character `{other}`")));
            }
        };
        advance(&mut i, &mut line, &mut col, c);
        out.push(Token { tok, pos });
    }
    out.push(Token { tok: Tok::Eof, pos: Pos { line, column: col } });
    Ok(out)
}

/// A parsed name with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub pos: Pos,
}

/// An allowed subject in a relation declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectAst {
    pub ty: Name,
    pub wildcard: bool,
    pub relation: Option<Name>,
}

/// An expression with positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprAst {
    Union(Vec<ExprAst>),
    Intersection(Vec<ExprAst>),
    Exclusion(Box<ExprAst>, Box<ExprAst>),
    Name(Name),
    Arrow(Name, Name),
    Nil(Pos),
}

/// A relation or a permission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemAst {
    Relation { name: Name, subjects: Vec<SubjectAst> },
    Permission { name: Name, expr: ExprAst },
}

impl ItemAst {
    pub fn name(&self) -> &Name {
        match self {
            ItemAst::Relation { name, .. } | ItemAst::Permission { name, .. } => name,
        }
    }
}

/// One `definition` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionAst {
    pub name: Name,
    pub items: Vec<ItemAst>,
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
    /// Non-fatal errors found while parsing.
    errors: Vec<SchemaError>,
}

type PResult<T> = Result<T, SchemaError>;

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.at.min(self.toks.len() - 1)]
    }
    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at < self.toks.len() - 1 {
            self.at += 1;
        }
        t
    }
    fn unexpected(&self, wanted: &str) -> SchemaError {
        let t = self.peek();
        SchemaError::new(Code::Syntax, t.pos, format!("expected {wanted}, found {}", t.tok.describe()))
    }
    fn expect(&mut self, tok: Tok, wanted: &str) -> PResult<Pos> {
        if self.peek().tok == tok { Ok(self.bump().pos) } else { Err(self.unexpected(wanted)) }
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(&self.peek().tok, Tok::Ident(s) if s == kw) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn name(&mut self, what: &str) -> PResult<Name> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Ident(s) => {
                if !valid_name(&s) {
                    return Err(SchemaError::new(
                        Code::Syntax,
                        t.pos,
                        format!(
                            "invalid {what} `{s}`: names are lowercase letters, digits and `_`, start with a letter and do not end with `_` (at most 64 characters)"
                        ),
                    ));
                }
                self.bump();
                Ok(Name { text: s, pos: t.pos })
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn definitions(&mut self) -> PResult<Vec<DefinitionAst>> {
        let mut defs = Vec::new();
        loop {
            if self.peek().tok == Tok::Eof {
                return Ok(defs);
            }
            if !self.keyword("definition") {
                return Err(self.unexpected("`definition`"));
            }
            let name = self.name("definition name")?;
            self.expect(Tok::LBrace, "`{`")?;
            let mut items = Vec::new();
            loop {
                if self.peek().tok == Tok::RBrace {
                    self.bump();
                    break;
                }
                if self.keyword("relation") {
                    let name = self.name("relation name")?;
                    self.expect(Tok::Colon, "`:`")?;
                    let mut subjects = vec![self.subject()?];
                    while self.peek().tok == Tok::Pipe {
                        self.bump();
                        subjects.push(self.subject()?);
                    }
                    items.push(ItemAst::Relation { name, subjects });
                } else if self.keyword("permission") {
                    let name = self.name("permission name")?;
                    self.expect(Tok::Eq, "`=`")?;
                    let expr = self.expr(0)?;
                    items.push(ItemAst::Permission { name, expr });
                } else {
                    return Err(self.unexpected("`relation`, `permission` or `}`"));
                }
            }
            defs.push(DefinitionAst { name, items });
        }
    }

    fn subject(&mut self) -> PResult<SubjectAst> {
        let ty = self.name("subject type")?;
        let mut wildcard = false;
        let mut relation = None;
        if self.peek().tok == Tok::Colon {
            self.bump();
            self.expect(Tok::Star, "`*` after `:`")?;
            wildcard = true;
        }
        if self.peek().tok == Tok::Hash {
            let hash = self.bump().pos;
            let rel = self.name("subject relation")?;
            if wildcard {
                self.errors.push(SchemaError::new(
                    Code::WildcardSubjectRelation,
                    hash,
                    format!("`{}:*#{}`: a wildcard cannot have a subject relation", ty.text, rel.text),
                ));
            }
            relation = Some(rel);
        }
        Ok(SubjectAst { ty, wildcard, relation })
    }

    fn expr(&mut self, depth: usize) -> PResult<ExprAst> {
        let first = self.term(depth)?;
        let mut op: Option<(Tok, Pos)> = None;
        let mut terms = vec![first];
        loop {
            let t = self.peek().clone();
            if !matches!(t.tok, Tok::Plus | Tok::Amp | Tok::Minus) {
                break;
            }
            match &op {
                None => op = Some((t.tok.clone(), t.pos)),
                Some((o, _)) if *o != t.tok => {
                    self.errors.push(SchemaError::new(
                        Code::MixedOperators,
                        t.pos,
                        format!(
                            "operators {} and {} are mixed at one level; add parentheses",
                            o.describe(),
                            t.tok.describe()
                        ),
                    ));
                }
                Some(_) => {}
            }
            self.bump();
            terms.push(self.term(depth)?);
        }
        Ok(match op {
            None => terms.pop().unwrap_or(ExprAst::Nil(Pos::default())),
            Some((Tok::Plus, _)) => ExprAst::Union(terms),
            Some((Tok::Amp, _)) => ExprAst::Intersection(terms),
            Some(_) => {
                let mut it = terms.into_iter();
                let mut acc = it.next().unwrap_or(ExprAst::Nil(Pos::default()));
                for t in it {
                    acc = ExprAst::Exclusion(Box::new(acc), Box::new(t));
                }
                acc
            }
        })
    }

    fn term(&mut self, depth: usize) -> PResult<ExprAst> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::LParen => {
                self.bump();
                if depth + 1 > MAX_NESTING {
                    return Err(SchemaError::new(
                        Code::LimitExceeded,
                        t.pos,
                        format!("expression nesting exceeds {MAX_NESTING}"),
                    ));
                }
                let e = self.expr(depth + 1)?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(e)
            }
            Tok::Ident(s) if s == "nil" => {
                self.bump();
                Ok(ExprAst::Nil(t.pos))
            }
            Tok::Ident(_) => {
                let left = self.expr_name()?;
                if self.peek().tok == Tok::Arrow {
                    self.bump();
                    let right = self.expr_name()?;
                    Ok(ExprAst::Arrow(left, right))
                } else {
                    Ok(ExprAst::Name(left))
                }
            }
            _ => Err(self.unexpected("a relation or permission name, `nil` or `(`")),
        }
    }

    /// A name inside an expression: hook references (`role__document__edit`) may contain `__`.
    fn expr_name(&mut self) -> PResult<Name> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Ident(s) if valid_name(&s) || valid_hook_ref(&s) => {
                self.bump();
                Ok(Name { text: s, pos: t.pos })
            }
            Tok::Ident(s) => Err(SchemaError::new(Code::Syntax, t.pos, format!("invalid name `{s}`"))),
            _ => Err(self.unexpected("a name")),
        }
    }
}

/// `[a-z]([a-z0-9_]{0,62}[a-z0-9])?`
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 64 || !b[0].is_ascii_lowercase() {
        return false;
    }
    if b.len() > 1 && !(b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit()) {
        return false;
    }
    b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A reference to a generated name: `__`-separated valid names.
fn valid_hook_ref(s: &str) -> bool {
    s.len() <= 200 && s.split("__").all(valid_name)
}

/// Parses schema text. `Err` holds the syntax error (the parse cannot continue); `Ok` holds the
/// definitions and any non-fatal errors found on the way.
pub fn parse(src: &str) -> Result<(Vec<DefinitionAst>, Vec<SchemaError>), SchemaError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, at: 0, errors: Vec::new() };
    let defs = p.definitions()?;
    Ok((defs, p.errors))
}

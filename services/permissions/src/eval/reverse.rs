//! LookupResources by a reverse walk (ADR 0028): instead of checking every candidate, the set of
//! objects on which the subject holds each relation or permission is computed from the subject
//! outward, one query per `(resource type, relation, subject type, subject relation)` and batch of
//! newly found ids, and combined with set operations.
//!
//! - The schema's names form a dependency graph: a relation depends on the subject sets it allows
//!   (`team#member`), a permission on the names and arrow targets in its expression. Its strongly
//!   connected components are evaluated dependencies first; a recursive component is iterated to
//!   its fixed point, following only the ids found in the previous round (the least fixed point,
//!   which is what Check computes when it cuts cycles).
//! - Where that is not exact, the walk gives way to checking candidates one by one, so results
//!   never differ from Check: an exclusion inside a recursive component (a permission that can
//!   depend on its own negation has no least fixed point, ADR 0021), or a chain of components and
//!   rounds longer than the depth limit (Check would answer MAX_DEPTH_EXCEEDED there).

use std::collections::{HashMap, HashSet};

use super::{EvalError, Evaluator, SubjectRef, TupleReader};
use crate::schema::{AllowedSubject, Expr};

/// Ids per `= any($n)` query.
const BATCH: usize = 5_000;

type NodeId = usize;

/// The ids found so far for one node, in discovery order (so that a follower can resume where it
/// stopped), with a set for membership.
#[derive(Debug, Default)]
struct Found {
    order: Vec<String>,
    set: HashSet<String>,
}

impl Found {
    fn add(&mut self, id: String) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        self.set.insert(id.clone());
        self.order.push(id);
        true
    }
}

/// A dependency of a node.
#[derive(Clone, Copy, Debug)]
struct Dep {
    on: NodeId,
    /// Under the right side of an exclusion.
    negative: bool,
    /// Through a subject set or an arrow (one hop in Check's depth).
    hop: bool,
}

/// A name of a type, with the nodes it depends on.
#[derive(Debug)]
struct Node {
    ty: String,
    name: String,
    deps: Vec<Dep>,
}

/// The dependency graph below one `(type, permission)`.
#[derive(Debug, Default)]
struct Graph {
    nodes: Vec<Node>,
    index: HashMap<(String, String), NodeId>,
}

impl Graph {
    fn node(&mut self, schema: &crate::schema::Schema, ty: &str, name: &str) -> NodeId {
        if let Some(&id) = self.index.get(&(ty.to_owned(), name.to_owned())) {
            return id;
        }
        let id = self.nodes.len();
        self.nodes.push(Node { ty: ty.into(), name: name.into(), deps: Vec::new() });
        self.index.insert((ty.into(), name.into()), id);
        let mut deps = Vec::new();
        if let Some(def) = schema.definition(ty) {
            if let Some(allowed) = def.relations.get(name) {
                for a in allowed {
                    if let AllowedSubject::Set(sty, srel) = a {
                        deps.push(Dep { on: self.node(schema, sty, srel), negative: false, hop: true });
                    }
                }
            } else if let Some(e) = def.permissions.get(name) {
                let mut names = Vec::new();
                expr_deps(schema, ty, e, false, &mut names);
                for (t, n, negative, hop) in names {
                    deps.push(Dep { on: self.node(schema, &t, &n), negative, hop });
                }
            }
        }
        self.nodes[id].deps = deps;
        id
    }

    /// Strongly connected components, each after every component it depends on (Tarjan).
    fn components(&self) -> Vec<Vec<NodeId>> {
        struct T<'g> {
            g: &'g Graph,
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on: Vec<bool>,
            stack: Vec<NodeId>,
            next: usize,
            out: Vec<Vec<NodeId>>,
        }
        fn visit(t: &mut T<'_>, v: NodeId) {
            t.index[v] = Some(t.next);
            t.low[v] = t.next;
            t.next += 1;
            t.stack.push(v);
            t.on[v] = true;
            for &Dep { on: w, .. } in &t.g.nodes[v].deps {
                match t.index[w] {
                    None => {
                        visit(t, w);
                        t.low[v] = t.low[v].min(t.low[w]);
                    }
                    Some(i) if t.on[w] => t.low[v] = t.low[v].min(i),
                    Some(_) => {}
                }
            }
            if Some(t.low[v]) == t.index[v] {
                let mut c = Vec::new();
                while let Some(w) = t.stack.pop() {
                    t.on[w] = false;
                    c.push(w);
                    if w == v {
                        break;
                    }
                }
                c.reverse();
                t.out.push(c);
            }
        }
        let n = self.nodes.len();
        let mut t = T {
            g: self,
            index: vec![None; n],
            low: vec![0; n],
            on: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if t.index[v].is_none() {
                visit(&mut t, v);
            }
        }
        t.out
    }
}

/// The `(type, name, negative, hop)` an expression on `ty` depends on; arrows depend on the name
/// on every type their relation allows as a direct subject.
fn expr_deps(
    schema: &crate::schema::Schema,
    ty: &str,
    e: &Expr,
    neg: bool,
    out: &mut Vec<(String, String, bool, bool)>,
) {
    match e {
        Expr::Nil => {}
        Expr::Name(n) => out.push((ty.into(), n.clone(), neg, false)),
        Expr::Arrow(rel, n) => {
            for tty in arrow_types(schema, ty, rel) {
                out.push((tty.into(), n.clone(), neg, true));
            }
        }
        Expr::Union(v) | Expr::Intersection(v) => v.iter().for_each(|x| expr_deps(schema, ty, x, neg, out)),
        Expr::Exclusion(l, r) => {
            expr_deps(schema, ty, l, neg, out);
            expr_deps(schema, ty, r, true, out);
        }
    }
}

fn arrow_types<'a>(schema: &'a crate::schema::Schema, ty: &str, rel: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = schema
        .relation(ty, rel)
        .unwrap_or_default()
        .iter()
        .filter_map(|a| match a {
            AllowedSubject::Direct(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    out.dedup();
    out
}

/// The state of one walk.
#[derive(Debug, Default)]
struct Walk {
    found: Vec<Found>,
    /// Relations: whether the subject's own rows were read.
    seeded: Vec<bool>,
    /// `(relation node, subject-set node)` → how many of the subject-set node's ids were followed.
    cursors: HashMap<(NodeId, NodeId), usize>,
    /// Objects reached through an arrow `(type, relation, target node)`, and how many of the target
    /// node's ids were followed.
    arrows: HashMap<(String, String, NodeId), (usize, Found)>,
}

impl<'s, R: TupleReader> Evaluator<'s, R> {
    /// The ids of `ty` on which `subject` holds `permission`, by the reverse walk; `None` where the
    /// walk would not be exact (then the caller checks candidates).
    pub(super) async fn reverse_walk(
        &mut self,
        ty: &str,
        permission: &str,
        subject: &SubjectRef,
    ) -> Result<Option<HashSet<String>>, EvalError> {
        let mut g = Graph::default();
        let target = g.node(self.schema, ty, permission);
        let components = g.components();
        let mut comp_of = vec![0; g.nodes.len()];
        for (i, c) in components.iter().enumerate() {
            for &v in c {
                comp_of[v] = i;
            }
        }
        // An exclusion within a recursive component: no least fixed point to compute.
        for c in &components {
            for &v in c {
                if g.nodes[v].deps.iter().any(|d| d.negative && comp_of[d.on] == comp_of[v]) {
                    return Ok(None);
                }
            }
        }
        let mut walk = Walk {
            found: (0..g.nodes.len()).map(|_| Found::default()).collect(),
            seeded: vec![false; g.nodes.len()],
            ..Walk::default()
        };
        // An upper bound of the hops below each component: the deepest component it depends on,
        // plus, for a recursive one, every node of it in every round (a round can chain them).
        let mut height = vec![0u32; components.len()];
        for (ci, c) in components.iter().enumerate() {
            let below = c
                .iter()
                .flat_map(|&v| g.nodes[v].deps.iter())
                .filter(|d| comp_of[d.on] != ci)
                .map(|d| height[comp_of[d.on]] + u32::from(d.hop))
                .max()
                .unwrap_or(0);
            let recursive = c.len() > 1 || g.nodes[c[0]].deps.iter().any(|d| d.on == c[0]);
            let size = u32::try_from(c.len()).unwrap_or(u32::MAX);
            let mut rounds = 0u32;
            loop {
                rounds += 1;
                if recursive && below.saturating_add(rounds.saturating_mul(size)) > self.max_depth {
                    return Ok(None);
                }
                let mut changed = false;
                for &v in c {
                    changed |= self.advance(&g, &mut walk, v, subject).await?;
                }
                if !recursive || !changed {
                    break;
                }
            }
            height[ci] = if recursive { below + rounds * size } else { below };
            if height[ci] > self.max_depth {
                return Ok(None);
            }
        }
        Ok(Some(std::mem::take(&mut walk.found[target].set)))
    }

    /// Brings node `v` up to date with what its dependencies have found; whether it grew.
    async fn advance(
        &mut self,
        g: &Graph,
        walk: &mut Walk,
        v: NodeId,
        subject: &SubjectRef,
    ) -> Result<bool, EvalError> {
        let node = &g.nodes[v];
        let Some(def) = self.schema.definition(&node.ty) else { return Ok(false) };
        let mut grew = false;
        if let Some(allowed) = def.relations.get(&node.name) {
            if !walk.seeded[v] {
                walk.seeded[v] = true;
                let plain = subject.relation.is_empty();
                let direct = allowed.iter().any(|a| match a {
                    AllowedSubject::Direct(t) => plain && *t == subject.ty,
                    AllowedSubject::Wildcard(t) => plain && *t == subject.ty,
                    AllowedSubject::Set(t, r) => *t == subject.ty && *r == subject.relation,
                });
                if direct {
                    let mut ids = vec![subject.id.clone()];
                    if plain && subject.id != "*" {
                        ids.push("*".into());
                    }
                    for id in
                        self.reader.read_reverse(&node.ty, &node.name, &subject.ty, &ids, &subject.relation).await?
                    {
                        grew |= walk.found[v].add(id);
                    }
                }
            }
            for &Dep { on: d, .. } in &node.deps {
                let (sty, srel) = (&g.nodes[d].ty, &g.nodes[d].name);
                let key = (v, d);
                let from = walk.cursors.get(&key).copied().unwrap_or(0);
                let to = walk.found[d].order.len();
                if from == to {
                    continue;
                }
                walk.cursors.insert(key, to);
                for chunk in walk.found[d].order[from..to].to_vec().chunks(BATCH) {
                    for id in self.reader.read_reverse(&node.ty, &node.name, sty, chunk, srel).await? {
                        grew |= walk.found[v].add(id);
                    }
                }
            }
            return Ok(grew);
        }
        let Some(e) = def.permissions.get(&node.name) else { return Ok(false) };
        let set = self.walk_expr(g, walk, v, e).await?;
        for id in set {
            grew |= walk.found[v].add(id);
        }
        Ok(grew)
    }

    /// The ids of node `v`'s type that satisfy `e`, from what the walk has found so far.
    fn walk_expr<'a>(
        &'a mut self,
        g: &'a Graph,
        walk: &'a mut Walk,
        v: NodeId,
        e: &'a Expr,
    ) -> futures::future::BoxFuture<'a, Result<HashSet<String>, EvalError>> {
        Box::pin(async move {
            let ty = &g.nodes[v].ty;
            Ok(match e {
                Expr::Nil => HashSet::new(),
                Expr::Name(n) => {
                    g.index.get(&(ty.clone(), n.clone())).map(|&d| walk.found[d].set.clone()).unwrap_or_default()
                }
                Expr::Arrow(rel, n) => {
                    let mut out = HashSet::new();
                    for tty in arrow_types(self.schema, ty, rel) {
                        let Some(&d) = g.index.get(&(tty.to_owned(), n.clone())) else { continue };
                        let key = (ty.clone(), rel.clone(), d);
                        let from = walk.arrows.get(&key).map_or(0, |a| a.0);
                        let to = walk.found[d].order.len();
                        if from < to {
                            let ids = walk.found[d].order[from..to].to_vec();
                            let mut reached = Vec::new();
                            for chunk in ids.chunks(BATCH) {
                                reached.extend(self.reader.read_reverse(ty, rel, tty, chunk, "").await?);
                            }
                            let acc = walk.arrows.entry(key.clone()).or_default();
                            acc.0 = to;
                            for id in reached {
                                acc.1.add(id);
                            }
                        }
                        if let Some((_, acc)) = walk.arrows.get(&key) {
                            out.extend(acc.set.iter().cloned());
                        }
                    }
                    out
                }
                Expr::Union(xs) => {
                    let mut out = HashSet::new();
                    for x in xs {
                        out.extend(self.walk_expr(g, walk, v, x).await?);
                    }
                    out
                }
                Expr::Intersection(xs) => {
                    let mut out: Option<HashSet<String>> = None;
                    for x in xs {
                        let s = self.walk_expr(g, walk, v, x).await?;
                        out = Some(match out {
                            None => s,
                            Some(acc) => acc.into_iter().filter(|id| s.contains(id)).collect(),
                        });
                    }
                    out.unwrap_or_default()
                }
                Expr::Exclusion(l, r) => {
                    let left = self.walk_expr(g, walk, v, l).await?;
                    if left.is_empty() {
                        return Ok(left);
                    }
                    let right = self.walk_expr(g, walk, v, r).await?;
                    left.into_iter().filter(|id| !right.contains(id)).collect()
                }
            })
        })
    }
}

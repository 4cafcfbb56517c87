//! Dependency rules (spec Rules 9-11): what satisfies a dependency, and cycle detection.
//!
//! "B depends on A" is an edge B → A (A is the blocker). Adding it closes a cycle exactly when B
//! is reachable from A along existing edges; [`cycle_path`] answers that from the edges reachable
//! from A, which the store loads under a per-organization advisory lock, so two concurrent
//! inserts can never together create a cycle.

use std::collections::{HashMap, HashSet, VecDeque};

use uuid::Uuid;

/// Most edges a cycle check visits (Rule 10).
pub const MAX_VISITED_EDGES: usize = 10_000;
/// Most blockers of one task.
pub const MAX_BLOCKERS: i64 = 100;

/// The four dependency types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyType {
    /// B may not start until A is closed.
    FinishToStart,
    /// B may not start until A has started or is cancelled.
    StartToStart,
    /// B may not be done until A is closed.
    FinishToFinish,
    /// B may not be done until A has started or is cancelled.
    StartToFinish,
}

impl DependencyType {
    /// Every type.
    pub const ALL: [DependencyType; 4] = [
        DependencyType::FinishToStart,
        DependencyType::StartToStart,
        DependencyType::FinishToFinish,
        DependencyType::StartToFinish,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyType::FinishToStart => "finish_to_start",
            DependencyType::StartToStart => "start_to_start",
            DependencyType::FinishToFinish => "finish_to_finish",
            DependencyType::StartToFinish => "start_to_finish",
        }
    }

    /// From a stored name.
    pub fn parse(s: &str) -> Option<DependencyType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether it holds the start of the dependent (`is_blocked`) rather than its completion
    /// (`completion_blocked`).
    pub fn blocks_start(self) -> bool {
        matches!(self, DependencyType::FinishToStart | DependencyType::StartToStart)
    }
}

/// Whether a live blocker in `status` (started when `started`) satisfies a dependency of `kind`.
/// Closed blockers satisfy every type; "started" types are satisfied once work began.
pub fn satisfied(kind: DependencyType, status: &str, started: bool) -> bool {
    let closed = matches!(status, "done" | "cancelled");
    match kind {
        DependencyType::FinishToStart | DependencyType::FinishToFinish => closed,
        DependencyType::StartToStart | DependencyType::StartToFinish => closed || started,
    }
}

/// Planned dates of one task, for the gantt constraints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dates {
    /// Planned start.
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// Due date.
    pub due: Option<chrono::DateTime<chrono::Utc>>,
}

/// Whether the dependent's dates break the gantt constraint of a dependency (Rule 13, lag in
/// calendar days): FS start(B) ≥ due(A)+lag; SS start(B) ≥ start(A)+lag; FF due(B) ≥
/// due(A)+lag; SF due(B) ≥ start(A)+lag. A constraint with a missing date is not evaluated.
pub fn constraint_violated(kind: DependencyType, lag_days: i32, blocker: Dates, dependent: Dates) -> bool {
    let (a, b) = match kind {
        DependencyType::FinishToStart => (blocker.due, dependent.start),
        DependencyType::StartToStart => (blocker.start, dependent.start),
        DependencyType::FinishToFinish => (blocker.due, dependent.due),
        DependencyType::StartToFinish => (blocker.start, dependent.due),
    };
    match (a, b) {
        (Some(a), Some(b)) => b < a + chrono::Duration::days(i64::from(lag_days)),
        _ => false,
    }
}

/// The cycle check gave up: the graph reachable from the blocker is too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphTooLarge;

/// If adding "`dependent` depends on `blocker`" would close a cycle, the cycle as task ids in
/// order, starting and ending with `dependent` (`dependent → blocker → … → dependent`).
/// `edges` maps a task to its blockers; only edges reachable from `blocker` matter.
pub fn cycle_path(
    edges: &HashMap<Uuid, Vec<Uuid>>,
    dependent: Uuid,
    blocker: Uuid,
) -> Result<Option<Vec<Uuid>>, GraphTooLarge> {
    if dependent == blocker {
        return Ok(Some(vec![dependent, dependent]));
    }
    let mut came_from: HashMap<Uuid, Uuid> = HashMap::new();
    let mut seen: HashSet<Uuid> = HashSet::from([blocker]);
    let mut queue = VecDeque::from([blocker]);
    let mut visited_edges = 0usize;
    while let Some(node) = queue.pop_front() {
        for &next in edges.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
            visited_edges += 1;
            if visited_edges > MAX_VISITED_EDGES {
                return Err(GraphTooLarge);
            }
            if !seen.insert(next) {
                continue;
            }
            came_from.insert(next, node);
            if next == dependent {
                let mut path = vec![dependent];
                let mut at = dependent;
                while let Some(&prev) = came_from.get(&at) {
                    path.push(prev);
                    at = prev;
                }
                path.push(dependent);
                path.reverse();
                return Ok(Some(path));
            }
            queue.push_back(next);
        }
    }
    Ok(None)
}

/// Dependency operations: add, remove, list.
pub mod ops {
    use std::collections::HashMap;

    use trellis_kit::db::Db;
    use trellis_kit::{Error, RequestContext, Result};
    use uuid::Uuid;

    use super::{DependencyType, GraphTooLarge, MAX_BLOCKERS, MAX_VISITED_EDGES, cycle_path};
    use crate::access::{Access, TaskPermission};
    use crate::error::TaskError;
    use crate::store::{self, DependencyRow, TaskRow};
    use crate::task::change::{blocking, emit_transitions};

    /// AddDependency: `task_id` depends on `depends_on_id` (Rules 10-11).
    pub async fn add(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        task_id: Uuid,
        depends_on_id: Uuid,
        kind: DependencyType,
        lag_days: i32,
    ) -> Result<(DependencyRow, TaskRow)> {
        if task_id == depends_on_id {
            return Err(Error::validation("depends_on_id", "a task cannot depend on itself"));
        }
        access.task(ctx, task_id, TaskPermission::Edit).await?;
        access.task(ctx, depends_on_id, TaskPermission::View).await?;
        let org_id = ctx.org_id()?;
        let mut tx = db.tenant_tx(ctx).await?;
        // One organization's inserts take turns: two concurrent inserts never close a cycle together.
        store::lock_dependency_graph(&mut tx, org_id).await?;
        let task = store::task_for_update(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        if task.archived {
            return Err(TaskError::BoardArchived.into());
        }
        store::task(&mut tx, depends_on_id).await?.ok_or(TaskError::TaskNotFound)?;
        if store::blocker_count(&mut tx, task_id).await? >= MAX_BLOCKERS {
            return Err(TaskError::LimitReached.into());
        }
        let limit = i64::try_from(MAX_VISITED_EDGES + 1).unwrap_or(i64::MAX);
        let mut edges: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (from, to) in store::edges_from(&mut tx, depends_on_id, limit).await? {
            edges.entry(from).or_default().push(to);
        }
        match cycle_path(&edges, task_id, depends_on_id) {
            Ok(Some(cycle)) => return Err(TaskError::DependencyCycle(cycle).into()),
            Ok(None) => {}
            Err(GraphTooLarge) => return Err(TaskError::DependencyGraphTooLarge.into()),
        }
        let before = blocking(&mut tx, &[task_id]).await?;
        let id = Uuid::now_v7();
        let created_by = ctx.user_id_opt();
        let new =
            store::NewDependency { org_id, id, task_id, depends_on_id, kind: kind.as_str(), lag_days, created_by };
        if !store::insert_dependency(&mut tx, &new).await? {
            return Err(TaskError::DependencyExists.into());
        }
        let changed = finish(tx, ctx, &before, task_id, id).await?;
        tracing::info!(task_id = %task_id, depends_on_id = %depends_on_id, "dependency added");
        Ok(changed)
    }

    /// RemoveDependency; may unblock the task.
    pub async fn remove(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        task_id: Uuid,
        dependency_id: Uuid,
    ) -> Result<TaskRow> {
        access.task(ctx, task_id, TaskPermission::Edit).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let task = store::task_for_update(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        if task.archived {
            return Err(TaskError::BoardArchived.into());
        }
        let before = blocking(&mut tx, &[task_id]).await?;
        if !store::delete_dependency(&mut tx, task_id, dependency_id).await? {
            return Err(TaskError::DependencyNotFound.into());
        }
        emit_transitions(&mut tx, ctx, &before).await?;
        let task = store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        tx.commit().await?;
        Ok(task)
    }

    /// UpdateDependency: a new type and/or lag; a change of type may block or unblock the task.
    pub async fn update(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        task_id: Uuid,
        dependency_id: Uuid,
        kind: Option<DependencyType>,
        lag_days: Option<i32>,
    ) -> Result<(DependencyRow, TaskRow)> {
        access.task(ctx, task_id, TaskPermission::Edit).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let task = store::task_for_update(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        if task.archived {
            return Err(TaskError::BoardArchived.into());
        }
        let before = blocking(&mut tx, &[task_id]).await?;
        if !store::update_dependency(&mut tx, task_id, dependency_id, kind.map(DependencyType::as_str), lag_days)
            .await?
        {
            return Err(TaskError::DependencyNotFound.into());
        }
        finish(tx, ctx, &before, task_id, dependency_id).await
    }

    /// After a dependency of `task_id` was added or changed: publishes the blocked/unblocked
    /// transitions since `before`, commits, and returns the dependency and the task.
    async fn finish(
        mut tx: trellis_kit::db::Tx,
        ctx: &RequestContext,
        before: &HashMap<Uuid, Vec<Uuid>>,
        task_id: Uuid,
        dependency_id: Uuid,
    ) -> Result<(DependencyRow, TaskRow)> {
        emit_transitions(&mut tx, ctx, before).await?;
        let dependency = store::dependencies_of(&mut tx, task_id, true)
            .await?
            .into_iter()
            .find(|d| d.id == dependency_id)
            .ok_or(TaskError::DependencyNotFound)?;
        let task = store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        tx.commit().await?;
        Ok((dependency, task))
    }

    /// ListDependencies: (blockers, dependents).
    pub async fn list(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        task_id: Uuid,
    ) -> Result<(Vec<DependencyRow>, Vec<DependencyRow>)> {
        access.task(ctx, task_id, TaskPermission::View).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        let blockers = store::dependencies_of(&mut tx, task_id, true).await?;
        let dependents = store::dependencies_of(&mut tx, task_id, false).await?;
        tx.commit().await?;
        Ok((blockers, dependents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn graph(pairs: &[(usize, usize)], nodes: &[Uuid]) -> HashMap<Uuid, Vec<Uuid>> {
        let mut g: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for &(from, to) in pairs {
            g.entry(nodes[from]).or_default().push(nodes[to]);
        }
        g
    }

    /// Transitive closure by repeated relaxation: reach[i][j] = j reachable from i.
    fn closure(n: usize, pairs: &[(usize, usize)]) -> Vec<Vec<bool>> {
        let mut reach = vec![vec![false; n]; n];
        for &(a, b) in pairs {
            reach[a][b] = true;
        }
        for k in 0..n {
            for i in 0..n {
                for j in 0..n {
                    if reach[i][k] && reach[k][j] {
                        reach[i][j] = true;
                    }
                }
            }
        }
        reach
    }

    #[test]
    fn a_closing_edge_reports_the_cycle_in_order() {
        let nodes: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        // 0 depends on 1, 1 depends on 2; adding "2 depends on 0" closes 2 → 0 → 1 → 2.
        let g = graph(&[(0, 1), (1, 2)], &nodes);
        assert_eq!(cycle_path(&g, nodes[2], nodes[0]), Ok(Some(vec![nodes[2], nodes[0], nodes[1], nodes[2]])));
        assert_eq!(cycle_path(&g, nodes[0], nodes[2]), Ok(None), "the same direction is fine");
    }

    #[test]
    fn satisfaction_follows_the_type() {
        use DependencyType::*;
        assert!(!satisfied(FinishToStart, "in_progress", true));
        assert!(satisfied(FinishToStart, "cancelled", false));
        assert!(satisfied(StartToStart, "in_progress", true));
        assert!(!satisfied(StartToStart, "todo", false));
        assert!(satisfied(StartToFinish, "done", false));
        assert!(FinishToStart.blocks_start() && !FinishToFinish.blocks_start());
    }

    #[test]
    fn a_huge_graph_is_refused() {
        let nodes: Vec<Uuid> = (0..MAX_VISITED_EDGES + 2).map(|_| Uuid::now_v7()).collect();
        let pairs: Vec<(usize, usize)> = (0..MAX_VISITED_EDGES + 1).map(|i| (i, i + 1)).collect();
        let g = graph(&pairs, &nodes);
        assert_eq!(cycle_path(&g, Uuid::now_v7(), nodes[0]), Err(GraphTooLarge));
    }

    proptest! {
        #[test]
        fn cycle_detection_agrees_with_brute_force_reachability(
            n in 2usize..12,
            inserts in proptest::collection::vec((0usize..12, 0usize..12), 0..60),
        ) {
            let nodes: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
            let mut accepted: Vec<(usize, usize)> = Vec::new();
            for (b, a) in inserts {
                let (b, a) = (b % n, a % n);
                let g = graph(&accepted, &nodes);
                let found = cycle_path(&g, nodes[b], nodes[a]);
                let reach = closure(n, &accepted);
                let brute = b == a || reach[a][b];
                match found {
                    Ok(Some(path)) => {
                        prop_assert!(brute, "reported a cycle that does not exist");
                        // The reported path is made of real edges plus the new one.
                        prop_assert_eq!(path.first(), Some(&nodes[b]));
                        prop_assert_eq!(path.last(), Some(&nodes[b]));
                        for pair in path.windows(2).skip(1) {
                            let from = nodes.iter().position(|x| *x == pair[0]).unwrap_or(usize::MAX);
                            let to = nodes.iter().position(|x| *x == pair[1]).unwrap_or(usize::MAX);
                            prop_assert!(accepted.contains(&(from, to)));
                        }
                    }
                    Ok(None) => {
                        prop_assert!(!brute, "missed a cycle");
                        if !accepted.contains(&(b, a)) {
                            accepted.push((b, a));
                        }
                    }
                    Err(GraphTooLarge) => prop_assert!(false, "tiny graphs are never too large"),
                }
                // Whatever was accepted stays acyclic.
                let reach = closure(n, &accepted);
                prop_assert!((0..n).all(|i| !reach[i][i]));
            }
        }
    }

    #[test]
    fn gantt_constraints_follow_type_and_lag_and_skip_missing_dates() {
        use chrono::{TimeZone, Utc};
        let day = |d: u32| Some(Utc.with_ymd_and_hms(2026, 3, d, 9, 0, 0).single().expect("date"));
        let a = Dates { start: day(1), due: day(5) };
        let b = |start, due| Dates { start, due };
        assert!(!constraint_violated(DependencyType::FinishToStart, 2, a, b(day(7), None)));
        assert!(constraint_violated(DependencyType::FinishToStart, 2, a, b(day(6), None)));
        assert!(!constraint_violated(DependencyType::FinishToStart, 0, a, b(day(5), None)));
        assert!(constraint_violated(DependencyType::StartToStart, 1, a, b(day(1), None)));
        assert!(constraint_violated(DependencyType::FinishToFinish, 0, a, b(None, day(4))));
        assert!(!constraint_violated(DependencyType::StartToFinish, -1, a, b(None, day(1))));
        assert!(constraint_violated(DependencyType::StartToFinish, 1, a, b(None, day(1))));
        assert!(!constraint_violated(
            DependencyType::FinishToStart,
            2,
            Dates { start: day(1), due: None },
            b(day(1), None)
        ));
        assert!(!constraint_violated(DependencyType::FinishToStart, 2, a, b(None, day(9))));
    }
}

//! The harness's cases, grouped by the operator they put under test. Each
//! runs as every [`RUNS`] entry: in memory, over two workers, and from the
//! store under a one-byte cache budget.

use super::{Case, RUNS, check};

async fn check_all(cases: &[Case]) {
    for case in cases {
        for run in RUNS {
            if let Err(error) = check(case, run).await {
                panic!("{}", error.message);
            }
        }
    }
}

/// `stream::ops::aggregate`: retractable accumulators (count, sum, avg),
/// groups recomputed from their rows (min, max, DISTINCT, ordered
/// string_agg), one global group, HAVING above it.
#[tokio::test]
async fn aggregate() {
    check_all(&[
        Case::new(
            "retractable",
            "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS s, avg(v) AS a FROM t1 GROUP BY k",
        ),
        Case::new(
            "recomputed",
            "SELECT k, min(v) AS lo, max(v) AS hi, count(DISTINCT v) AS d, \
             string_agg(CAST(v AS TEXT), ',' ORDER BY v) AS vs, bool_and(v > 0) AS pos FROM t1 GROUP BY k",
        ),
        Case::new("global", "SELECT count(*) AS n, sum(v) AS s, max(v) AS m FROM t1"),
        Case::new("having", "SELECT k, sum(v) AS s FROM t1 GROUP BY k HAVING count(*) > 2"),
        Case::new("two keys", "SELECT k, v, count(*) AS n FROM t1 GROUP BY k, v"),
        // Over inputs that only insert, min/max and the like keep one value
        // per group (accumulating mode); order-sensitive ones still recompute.
        Case::new(
            "insert-only accumulating",
            "SELECT k, min(v) AS lo, max(v) AS hi, count(*) AS n, count(v) AS nv, sum(v) AS s, avg(v) AS a, \
             bool_or(v > 0) AS pos, bit_xor(v) AS x FROM t1 GROUP BY k",
        )
        .insert_only(),
        Case::new("insert-only global", "SELECT max(v) AS m, min(ts) AS first, count(*) AS n FROM t1").insert_only(),
        Case::new(
            "insert-only over a join",
            "SELECT t1.k, max(t2.v) AS m, min(t1.v) AS l FROM t1 JOIN t2 ON t1.k = t2.k GROUP BY t1.k",
        )
        .insert_only(),
        Case::new(
            "insert-only filtered",
            "SELECT k, count(*) FILTER (WHERE v > 0) AS pos, sum(v) FILTER (WHERE id % 2 = 0) AS even, \
             max(v) FILTER (WHERE v < 0) AS neg, min(v + k) AS lo FROM t1 GROUP BY k",
        )
        .insert_only(),
        Case::new(
            "insert-only recomputed",
            "SELECT k, max(v) AS hi, count(DISTINCT v) AS d, string_agg(CAST(v AS TEXT), ',' ORDER BY v) AS vs \
             FROM t1 GROUP BY k",
        )
        .insert_only(),
        Case::new(
            "filtered and arrays",
            "SELECT k, count(*) FILTER (WHERE v > 0) AS pos, array_agg(v ORDER BY v) AS vs, bit_or(v) AS b \
             FROM t1 GROUP BY k",
        ),
    ])
    .await;
}

/// DISTINCT and UNION are group-bys without aggregates.
#[tokio::test]
async fn distinct() {
    check_all(&[
        Case::new("select distinct", "SELECT DISTINCT k, v FROM t1"),
        Case::new("union", "SELECT k FROM t1 UNION SELECT k FROM t2"),
        Case::new("count distinct only", "SELECT count(DISTINCT k) AS n FROM t1"),
    ])
    .await;
}

/// `stream::ops::join`: every join kind, a residual filter, and a join
/// under an aggregate.
#[tokio::test]
async fn join() {
    check_all(&[
        Case::new("inner", "SELECT t1.id AS a, t2.id AS b, t1.v AS x, t2.v AS y FROM t1 JOIN t2 ON t1.k = t2.k"),
        Case::new("left", "SELECT t1.id AS a, t2.id AS b FROM t1 LEFT JOIN t2 ON t1.k = t2.k"),
        Case::new("right", "SELECT t1.id AS a, t2.id AS b FROM t1 RIGHT JOIN t2 ON t1.k = t2.k"),
        Case::new(
            "full with a residual",
            "SELECT t1.id AS a, t2.id AS b FROM t1 FULL JOIN t2 ON t1.k = t2.k AND t1.v < t2.v",
        ),
        Case::new("semi", "SELECT id, k FROM t1 WHERE EXISTS (SELECT 1 FROM t2 WHERE t2.k = t1.k AND t2.v > 0)"),
        Case::new("anti", "SELECT id, k FROM t1 WHERE NOT EXISTS (SELECT 1 FROM t2 WHERE t2.k = t1.k)"),
        Case::new("in", "SELECT id FROM t1 WHERE v IN (SELECT v FROM t2)"),
        Case::new("self", "SELECT a.id AS x, b.id AS y FROM t1 a JOIN t1 b ON a.k = b.k AND a.id < b.id"),
        Case::new(
            "three tables",
            "SELECT t1.id AS a, t2.id AS b, d.n FROM t1 JOIN t2 ON t1.k = t2.k \
             JOIN (SELECT v, count(*) AS n FROM t2 GROUP BY v) d ON d.v = t1.v",
        ),
        Case::new(
            "aggregated",
            "SELECT t1.k, count(*) AS n, sum(t2.v) AS s FROM t1 JOIN t2 ON t1.k = t2.k GROUP BY t1.k",
        ),
    ])
    .await;
}

/// `stream::ops::topn`: ORDER BY … LIMIT, with an offset, ascending and
/// descending with NULLs. The order includes `id`, so the answer is unique.
#[tokio::test]
async fn top_n() {
    check_all(&[
        Case::new("limit", "SELECT id, v FROM t1 ORDER BY v DESC NULLS LAST, id LIMIT 3"),
        Case::new("offset", "SELECT id, k, v FROM t1 ORDER BY v NULLS FIRST, id LIMIT 4 OFFSET 2"),
        Case::new("of an aggregate", "SELECT k, count(*) AS n FROM t1 GROUP BY k ORDER BY n DESC, k LIMIT 2"),
    ])
    .await;
}

/// `stream::ops::window`: ranking, group top-N over a rank, and other
/// window functions with a frame.
#[tokio::test]
async fn window() {
    check_all(&[
        Case::new(
            "ranking",
            "SELECT id, k, row_number() OVER (PARTITION BY k ORDER BY v, id) AS rn, \
             rank() OVER (PARTITION BY k ORDER BY v) AS r, dense_rank() OVER (PARTITION BY k ORDER BY v) AS dr FROM t1",
        ),
        Case::new(
            "group top-n",
            "SELECT id, k, v FROM (SELECT id, k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC, id) AS rn \
             FROM t1) ranked WHERE rn <= 2",
        ),
        Case::new(
            "lag and a frame",
            "SELECT id, lag(v) OVER (PARTITION BY k ORDER BY id) AS prev, \
             sum(v) OVER (PARTITION BY k ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s2 FROM t1",
        ),
    ])
    .await;
}

/// `stream::ops::interval` (inside the join): rows leave the join's state
/// as the watermarks pass them, and the join still equals the batch join.
#[tokio::test]
async fn interval_join() {
    check_all(&[
        Case::new(
            "between",
            "SELECT t1.id AS a, t2.id AS b FROM t1 JOIN t2 ON t1.k = t2.k \
             AND t2.ts BETWEEN t1.ts - INTERVAL '2' SECOND AND t1.ts + INTERVAL '3' SECOND",
        )
        .watermarks(&[("t1", 4), ("t2", 4)]),
        Case::new(
            "window join",
            "SELECT a.w, a.k, a.n, b.n AS m FROM \
             (SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, k, count(*) AS n FROM t1 GROUP BY 1, 2) a JOIN \
             (SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, k, count(*) AS n FROM t2 GROUP BY 1, 2) b \
             ON a.w = b.w AND a.k = b.k",
        )
        .watermarks(&[("t1", 3), ("t2", 3)]),
    ])
    .await;
}

/// Outer, semi and anti window joins (rows meet rows of the same window):
/// rows leave the state once both watermarks pass their window, late rows
/// are dropped, and the join still equals the batch join. Nexmark q5's
/// shape is the semi join: the keys of a window whose count reaches the
/// window's highest.
#[tokio::test]
async fn window_join_of_every_kind() {
    const A: &str = "(SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, k, count(*) AS n FROM t1 GROUP BY 1, 2)";
    const B: &str = "(SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, k, count(*) AS n FROM t2 GROUP BY 1, 2)";
    const TOP: &str = "(SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, max(v) AS m FROM t2 GROUP BY 1)";
    let semi =
        format!("SELECT a.w, a.k, a.n FROM {A} a WHERE EXISTS (SELECT 1 FROM {TOP} b WHERE b.w = a.w AND a.n >= b.m)");
    let anti =
        format!("SELECT a.w, a.k, a.n FROM {A} a WHERE NOT EXISTS (SELECT 1 FROM {B} b WHERE b.w = a.w AND b.k = a.k)");
    let left = format!("SELECT a.w, a.k, a.n, b.n AS m FROM {A} a LEFT JOIN {B} b ON a.w = b.w AND a.k = b.k");
    let full = format!(
        "SELECT a.w, a.k, a.n, b.w AS bw, b.n AS m FROM {A} a FULL JOIN {B} b ON a.w = b.w AND a.k = b.k AND a.n > b.n"
    );
    let queries: Vec<(&'static str, String)> = vec![
        ("window semi join", semi),
        ("window anti join", anti),
        ("window left join", left),
        ("window full join", full),
    ];
    let cases: Vec<Case> = queries
        .into_iter()
        .map(|(name, sql)| Case::new(name, Box::leak(sql.into_boxed_str())).watermarks(&[("t1", 3), ("t2", 3)]))
        .collect();
    for case in &cases {
        // Each is planned bounded in time (else this would test nothing new).
        let plan = super::stream_plan(case, 1).await.unwrap_or_else(|e| panic!("{}", e.message));
        let explain = plan.explain();
        let join = explain.iter().find(|l| l.trim_start().starts_with("Join"));
        assert!(join.is_some_and(|l| l.contains("rows leave as watermarks pass")), "{}: {explain:?}", case.name);
    }
    check_all(&cases).await;
}

/// `stream::ops::event_time` with the aggregate: windows close as the
/// watermark passes them; with EMIT ON WINDOW CLOSE the view holds the
/// closed windows only, each once, final.
#[tokio::test]
async fn windowed_aggregate() {
    const WINDOWS: &str =
        "SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, k, count(*) AS n, sum(v) AS s FROM t1 GROUP BY 1, 2";
    check_all(&[
        Case::new("emit on update", WINDOWS).watermarks(&[("t1", 4)]),
        Case::new("emit on window close", WINDOWS).watermarks(&[("t1", 4)]).emit_on_window_close().oracle(
            "SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, k, count(*) AS n, sum(v) AS s FROM t1 \
                 WHERE date_bin(INTERVAL '5' SECOND, ts) < date_bin(INTERVAL '5' SECOND, {wm}) GROUP BY 1, 2",
        ),
        // Nexmark q7's shape: the highest value per window of a stream that
        // only inserts, one value per window.
        Case::new(
            "insert-only window max",
            "SELECT date_bin(INTERVAL '5' SECOND, ts) AS w, max(v) AS m FROM t1 GROUP BY 1",
        )
        .watermarks(&[("t1", 4)])
        .insert_only(),
    ])
    .await;
}

/// `plan::node::expand` and `stream::ops::expand`: a hopping window's
/// UNION ALL of shifted copies of one input reads the input once and merges
/// equal rows (weights of both signs summed) before copying them. The view
/// equals its batch query with updates and deletes, over a watermark (late
/// rows dropped per window, windows closing); copies of different inputs
/// stay a union.
#[tokio::test]
async fn expand() {
    use super::stream_plan;

    const HOPS: &str = "SELECT w, k, count(*) AS n, sum(v) AS s, max(v) AS m FROM (\
         SELECT k, v, date_bin(INTERVAL '2' SECOND, ts) AS w FROM t1 UNION ALL \
         SELECT k, v, date_bin(INTERVAL '2' SECOND, ts) - INTERVAL '2' SECOND AS w FROM t1 UNION ALL \
         SELECT k, v, date_bin(INTERVAL '2' SECOND, ts) - INTERVAL '4' SECOND AS w FROM t1) h GROUP BY w, k";
    let hops = Case::new("hopping", HOPS);
    let plan = stream_plan(&hops, 2).await.unwrap_or_else(|e| panic!("{}", e.message));
    let explain = plan.explain();
    let nodes = |kind: &str| explain.iter().filter(|line| line.trim_start().starts_with(kind)).count();
    assert_eq!((nodes("Expand"), nodes("Union"), nodes("Scan")), (1, 0, 1), "{explain:#?}");

    const TWO_INPUTS: &str = "SELECT w, count(*) AS n FROM (\
         SELECT date_bin(INTERVAL '2' SECOND, ts) AS w FROM t1 UNION ALL \
         SELECT date_bin(INTERVAL '2' SECOND, ts) - INTERVAL '2' SECOND AS w FROM t2) h GROUP BY w";
    let apart = Case::new("two inputs", TWO_INPUTS);
    let plan = stream_plan(&apart, 2).await.unwrap_or_else(|e| panic!("{}", e.message));
    let explain = plan.explain();
    assert!(!explain.iter().any(|line| line.trim_start().starts_with("Expand")), "{explain:#?}");

    check_all(&[hops, Case::new("hopping over a watermark", HOPS).watermarks(&[("t1", 4)]), apart]).await;
}

/// `stream::ops::temporal_filter`: rows leave (`>`) or enter (`<=`) the
/// view as the epochs' time passes.
#[tokio::test]
async fn temporal_filter() {
    check_all(&[
        Case::new("sliding", "SELECT id, ts FROM t1 WHERE ts > now() - INTERVAL '4' SECOND")
            .oracle("SELECT id, ts FROM t1 WHERE ts > {now} - INTERVAL '4' SECOND"),
        Case::new("due", "SELECT id, k FROM t1 WHERE ts <= now()").oracle("SELECT id, k FROM t1 WHERE ts <= {now}"),
        Case::new(
            "under an aggregate",
            "SELECT k, count(*) AS n FROM t1 WHERE ts > now() - INTERVAL '3' SECOND GROUP BY k",
        )
        .oracle("SELECT k, count(*) AS n FROM t1 WHERE ts > {now} - INTERVAL '3' SECOND GROUP BY k"),
    ])
    .await;
}

/// The harness itself: a view that differs from its batch query in one
/// group's count is caught, with the difference in the message.
#[tokio::test]
async fn a_wrong_view_is_caught() {
    let case = Case::new("off by one", "SELECT k, count(*) AS n FROM t1 GROUP BY k")
        .oracle("SELECT k, count(*) + CASE WHEN k = 2 THEN 1 ELSE 0 END AS n FROM t1 GROUP BY k");
    let Err(error) = check(&case, RUNS[0]).await else { panic!("the harness accepted a wrong view") };
    assert!(error.message.contains("the view differs from the batch query"), "{}", error.message);
    assert!(error.message.contains("missing from the view"), "{}", error.message);
}

/// A stream plan is data: before anything runs it tells which operators a
/// query becomes, in what order, which keep state (numbered inputs first),
/// which are split over workers and which columns carry a watermark; and it
/// builds into operators as often as asked.
#[tokio::test]
async fn a_stream_plan_tells_what_will_run() {
    use super::stream_plan;
    use crate::plan::node::Kind;

    let case = Case::new(
        "join under aggregate",
        "SELECT t2.v, count(*) AS n FROM t1 JOIN t2 ON t1.k = t2.k WHERE t1.v > 0 GROUP BY t2.v",
    );
    let plan = stream_plan(&case, 2).await.unwrap_or_else(|e| panic!("{}", e.message));
    let nodes = plan.root.walk();
    let kinds: Vec<&str> = nodes.iter().map(|n| n.kind.name()).collect();
    let at = |name: &str| kinds.iter().position(|k| *k == name).unwrap_or_else(|| panic!("no {name} in {kinds:?}"));
    assert!(at("Aggregate") < at("Join") && at("Join") < at("Filter"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "Scan").count(), 2, "{kinds:?}");
    let (aggregate, join) = (nodes[at("Aggregate")], nodes[at("Join")]);
    assert_eq!((join.kind.state(), aggregate.kind.state()), (Some(0), Some(1)));
    assert!(aggregate.partitioned(2) && join.partitioned(2) && !join.partitioned(1));
    assert_eq!(plan.inputs.iter().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(plan.explain().len(), nodes.len());
    assert!(plan.watermarked().is_empty());
    let stats = crate::stream::watermark::ViewStats::new();
    for _ in 0..2 {
        let op = plan.build(&stats).unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(op.schema().fields().len(), 2);
    }

    let windowed = Case::new(
        "windowed",
        "SELECT date_bin(INTERVAL '10 seconds', ts) AS w, count(*) AS n FROM t1 GROUP BY date_bin(INTERVAL '10 seconds', ts)",
    )
    .watermarks(&[("t1", 5)]);
    let plan = stream_plan(&windowed, 1).await.unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(plan.watermarked(), vec![0]);
    let aggregate = plan.root.walk().into_iter().find(|n| n.kind.name() == "Aggregate").expect("an aggregate");
    let Kind::Aggregate(node) = &aggregate.kind else { unreachable!() };
    assert_eq!(node.time_column, Some(0));
    assert!(plan.explain().iter().any(|line| line.contains("watermark on")), "{:?}", plan.explain());
}

/// `plan::common_subplans` and `stream::ops::shared`: a computation the
/// query names twice (Nexmark q5's two counts per key, one grouped in the
/// other order; a self-join of one aggregate) runs once and feeds both
/// places, and the view still equals its batch query.
#[tokio::test]
async fn common_subplans() {
    use super::stream_plan;

    const COUNTS_AND_THEIR_MAXIMUM: &str = "SELECT a.k, a.v, a.n FROM (SELECT k, v, count(*) AS n FROM t1 GROUP BY k, v) a \
         JOIN (SELECT max(c.n) AS m, c.k FROM (SELECT v, k, count(*) AS n FROM t1 GROUP BY v, k) c GROUP BY c.k) b \
         ON a.k = b.k AND a.n >= b.m";
    const SELF_JOIN: &str = "SELECT x.k, x.s, y.s AS s2 FROM (SELECT k, sum(v) AS s FROM t1 GROUP BY k) x \
         JOIN (SELECT k, sum(v) AS s FROM t1 GROUP BY k) y ON x.k = y.k + 1";
    let cases = [Case::new("counts and their maximum", COUNTS_AND_THEIR_MAXIMUM), Case::new("self-join", SELF_JOIN)];
    for case in &cases {
        let plan = stream_plan(case, 2).await.unwrap_or_else(|e| panic!("{}", e.message));
        let explain = plan.explain();
        let shared = |fact: &str| explain.iter().filter(|line| line.contains(fact)).count();
        assert_eq!((shared("shared: computed once"), shared("shared: the operator above")), (1, 1), "{explain:#?}");
        let aggregates = explain.iter().filter(|line| line.trim_start().starts_with("Aggregate")).count();
        assert_eq!(aggregates, if case.name == "self-join" { 2 } else { 3 }, "{explain:#?}");
    }
    check_all(&cases).await;

    // Different aggregates over the same input stay apart.
    let apart = Case::new(
        "apart",
        "SELECT x.k, x.s, y.s AS s2 FROM (SELECT k, sum(v) AS s FROM t1 GROUP BY k) x \
         JOIN (SELECT k, max(v) AS s FROM t1 GROUP BY k) y ON x.k = y.k",
    );
    let plan = stream_plan(&apart, 2).await.unwrap_or_else(|e| panic!("{}", e.message));
    assert!(!plan.explain().iter().any(|line| line.contains("shared")), "{:#?}", plan.explain());
    check_all(&[apart]).await;
}

//! The result of a run, as text for people or one JSON object (`--json`) for the scripts in
//! `bench/` that parse it; and the generator's own CPU time, so a run shows what it cost.

use crate::args::{BenchArgs, Consistency, Mode};
use crate::load::PhaseResult;
use std::time::Duration;

pub(crate) fn report(
    args: &BenchArgs,
    endpoints: &[String],
    seed: u64,
    prefill: Option<&PhaseResult>,
    main: &PhaseResult,
    sentinel: Option<Result<Duration, String>>,
) {
    let s = &main.stats;
    let secs = main.elapsed.as_secs_f64();
    let ok = s.put.count + s.get.count;
    let ops = ok as f64 / secs;
    let mut all = s.put.clone();
    all.merge(&s.get);
    let committed = match &sentinel {
        Some(Ok(d)) => Some(s.put.count as f64 / (secs + d.as_secs_f64())),
        _ => None,
    };
    let mode = format!("{:?}", args.mode).to_lowercase();
    let consistency = match (args.mode, args.consistency) {
        (Mode::Raftexample, _) => "local (stale; raftexample has no other read)",
        (Mode::Etcd, Consistency::Local) => "serializable",
        (_, Consistency::Local) => "local",
        (_, Consistency::Linearizable) => "linearizable",
    };
    if args.json {
        let errors: serde_json::Map<String, serde_json::Value> = s
            .errors
            .iter()
            .map(|(k, (n, _))| (k.clone(), (*n).into()))
            .collect();
        let error_examples: serde_json::Map<String, serde_json::Value> = s
            .errors
            .iter()
            .map(|(k, (_, d))| (k.clone(), d.clone().into()))
            .collect();
        let v = serde_json::json!({
            "mode": mode,
            "endpoints": endpoints.iter().map(|e| format!("http://{e}")).collect::<Vec<_>>(),
            "clients": args.clients,
            "keys": args.keys,
            "key_size": args.key_size,
            "value_size": args.value_size,
            "put_ratio": args.put_ratio,
            "consistency": consistency,
            "seed": seed,
            "elapsed_s": (secs * 1000.0).round() / 1000.0,
            "ok": ok,
            "puts": s.put.count,
            "gets": s.get.count,
            "not_found": s.not_found,
            "errors_total": s.error_count(),
            "errors": errors,
            "error_examples": error_examples,
            "ops_per_sec": (ops * 10.0).round() / 10.0,
            "generator_cpu_s": (own_cpu_seconds() * 1000.0).round() / 1000.0,
            "latency_us": {"all": all.json(), "put": s.put.json(), "get": s.get.json()},
            "prefill": prefill.map(|p| serde_json::json!({
                "puts": p.stats.put.count,
                "errors_total": p.stats.error_count(),
                "elapsed_s": p.elapsed.as_secs_f64(),
            })),
            "sentinel": sentinel.as_ref().map(|r| match r {
                Ok(d) => serde_json::json!({
                    "visible_after_ms": (d.as_secs_f64() * 1e4).round() / 10.0,
                    "committed_puts_per_sec": committed.map(|c| (c * 10.0).round() / 10.0),
                }),
                Err(e) => serde_json::json!({"error": e}),
            }),
        });
        println!("{v}");
        return;
    }
    println!(
        "raftkv bench: mode {mode}, {} endpoint(s), {} clients, {} keys of {} B, values of {} B, put ratio {}, reads {consistency}",
        endpoints.len(),
        args.clients,
        args.keys,
        args.key_size,
        args.value_size,
        args.put_ratio
    );
    println!(
        "{ok} ok in {secs:.2}s: {ops:.1} ops/s  (puts {}, gets {}, of which not found {}), errors {}",
        s.put.count,
        s.get.count,
        s.not_found,
        s.error_count()
    );
    let ms = |us: u64| us as f64 / 1000.0;
    if ok > 0 {
        println!(
            "latency ms  {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "count", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
    }
    for (name, h) in [("put", &s.put), ("get", &s.get), ("all", &all)] {
        if h.count == 0 || (name == "all" && (s.put.count == 0 || s.get.count == 0)) {
            continue;
        }
        println!(
            "  {name:<9} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            h.count,
            h.mean() / 1000.0,
            ms(h.quantile(0.5)),
            ms(h.quantile(0.9)),
            ms(h.quantile(0.99)),
            ms(h.quantile(0.999)),
            ms(h.max)
        );
    }
    for (kind, (n, detail)) in &s.errors {
        println!("error {kind}: {n} (e.g. {detail:?})");
    }
    println!("load generator CPU: {:.2}s", own_cpu_seconds());
    match (&sentinel, committed) {
        (Some(Ok(d)), Some(c)) => println!(
            "sentinel visible on every endpoint {:.1} ms after the load stopped: committed rate {} puts / {:.3}s = {c:.1} puts/s",
            d.as_secs_f64() * 1000.0,
            s.put.count,
            secs + d.as_secs_f64()
        ),
        (Some(Err(e)), _) => println!("sentinel: {e}"),
        _ => {}
    }
}

/// CPU time (user + system) this process has used so far, so a run can show what the load
/// generator itself cost on a shared machine.
pub(crate) fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

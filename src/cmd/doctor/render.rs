//! doctor's facts and verdict as text for people, or as one JSON object (its schema
//! is `json`'s, documented in the README).

use std::fmt::Write;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::Facts;
use super::assess::{Assessment, FEATURES, Finding, Outlook, has_feature};
use crate::plan::mode::{Backend, Reach};
use crate::protocol::findings::Missing;
use crate::sys::namespaces::Kind;
use crate::systemd::Manager;

pub fn text(facts: &Facts, assessment: &Assessment, config: &str) -> String {
    let mut out = String::new();
    let manager = match facts.manager {
        Manager::System => "the system manager",
        Manager::User => "your user manager",
    };
    let _ = writeln!(out, "phasebox doctor, for uid {} (phases use {manager} where systemd runs)", facts.uid);
    out.push_str("\nsystemd\n");
    if facts.systemd_running {
        for (name, kind) in [("system manager", Manager::System), ("user manager", Manager::User)] {
            let _ = writeln!(out, "  {name:<17}{}", describe_manager(facts.of(kind)));
        }
    } else {
        out.push_str(
            "  not running: this host was not booted with systemd (/run/systemd/system is missing)\n",
        );
    }
    if let Some(version) = facts.of(facts.manager).version() {
        let features: Vec<String> = FEATURES
            .iter()
            .map(|(name, since)| {
                let yes = if has_feature(version, *since) { "yes" } else { "no" };
                match since {
                    Some(since) => format!("{name} {yes} ({since}+)"),
                    None => format!("{name} {yes}"),
                }
            })
            .collect();
        let _ = writeln!(out, "  {:<17}{}", "services get", features.join(", "));
    }

    let ns = &facts.namespaces;
    let _ = writeln!(out, "\nnamespaces (created for real, as uid {})", facts.uid);
    for (kind, result) in &ns.kinds {
        let _ = writeln!(out, "  {:<17}{}", kind_name(*kind), yes_or_why(&result.map_err(|m| m.reason())));
    }
    let _ = writeln!(out, "  {:<17}{}", format!("user (uid {})", ns.user_probed_as), yes_or_why(&ns.user));
    let sysctl = |value: Option<u64>| value.map_or("absent".to_string(), |v| v.to_string());
    let _ = writeln!(
        out,
        "  kernel.unprivileged_userns_clone = {}, user.max_user_namespaces = {}",
        sysctl(ns.unprivileged_userns_clone),
        sysctl(ns.max_user_namespaces)
    );
    let _ = writeln!(out, "\n{:<19}{}", "cgroups", facts.cgroup.name());
    let portage = match facts.portage.uid {
        None => "does not exist".to_string(),
        Some(uid) if facts.portage.lingering => format!("uid {uid}, lingering (has a user manager)"),
        Some(uid) => format!("uid {uid}, not lingering"),
    };
    let _ = writeln!(out, "{:<19}{portage}", "portage user");

    let _ = writeln!(out, "\nphases with --mode auto (policy config: {config}; * by systemd, ! missing)");
    let _ =
        writeln!(out, "{:<10} {:<11} {:<17} {:<11} ISOLATIONS", "PHASE", "MODE", "ISOLATIONS", "--keep-fds");
    for phase in &assessment.phases {
        let _ = writeln!(
            out,
            "{:<10} {:<11} {:<17} {:<11} {}",
            phase.phase,
            mode(&phase.auto),
            isolations(&phase.auto),
            mode(&phase.keep_fds),
            isolations(&phase.keep_fds)
        );
    }
    let mut reasons: Vec<String> = Vec::new();
    for outlook in assessment.phases.iter().flat_map(|p| [&p.auto, &p.keep_fds]) {
        let line = match (&outlook.fails, outlook.backend) {
            (Some(why), _) => format!("{} mode fails: {why}", outlook.backend.name()),
            (None, Backend::Unconfined) => {
                "unconfined: like portage, these phases run in the host's namespaces".to_string()
            }
            (None, backend) => format!("{} mode: {}", backend.name(), outlook.reason),
        };
        if !reasons.contains(&line) {
            reasons.push(line);
        }
    }
    for line in reasons {
        let _ = writeln!(out, "  {line}");
    }

    findings(&mut out, "problems", &assessment.problems);
    findings(&mut out, "advice", &assessment.advice);
    let _ = writeln!(
        out,
        "\n{}",
        if assessment.problems.is_empty() {
            "every default isolation is available (exit 0)".to_string()
        } else {
            format!("{} problem(s): see above (exit {})", assessment.problems.len(), assessment.exit_status())
        }
    );
    out
}

fn describe_manager(reach: &Reach) -> String {
    match reach {
        Reach::Answered { bus, version: Some(version) } => format!("systemd {version}, reachable at {bus}"),
        Reach::Answered { bus, version: None } => {
            format!("systemd of an unknown version, reachable at {bus}")
        }
        other => format!("not reachable: {other}"),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Network => "network",
        Kind::Ipc => "IPC",
        Kind::Uts => "hostname (UTS)",
        Kind::Pid => "PID",
    }
}

fn yes_or_why(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "yes".into(),
        Err(why) => format!("NO: {why}"),
    }
}

fn mode(outlook: &Outlook) -> String {
    match outlook.fails {
        Some(_) => format!("{}!", outlook.backend.name()),
        None => outlook.backend.name().to_string(),
    }
}

fn isolations(outlook: &Outlook) -> String {
    if outlook.isolations.is_empty() {
        return "-".into();
    }
    let tags: Vec<String> = outlook
        .isolations
        .iter()
        .map(|i| {
            let systemd = if i.by.starts_with("systemd") { "*" } else { "" };
            let missing = if i.available.is_err() { "!" } else { "" };
            format!("{}{systemd}{missing}", i.kind.tag())
        })
        .collect();
    tags.join(" ")
}

fn findings(out: &mut String, heading: &str, list: &[Finding]) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{heading}");
    for finding in list {
        let _ = writeln!(out, "  - {}\n    fix: {}", finding.problem, finding.fix);
    }
}

/// The same as one JSON object, with a newline.
pub fn json(facts: &Facts, assessment: &Assessment) -> Result<String> {
    let manager = |reach: &Reach| {
        let features: serde_json::Map<String, Value> = FEATURES
            .iter()
            .map(|(name, since)| {
                (name.to_string(), json!(reach.version().is_some_and(|v| has_feature(v, *since))))
            })
            .collect();
        let answered = matches!(reach, Reach::Answered { .. });
        json!({
            "bus": reach.bus().filter(|_| !matches!(reach, Reach::NoSocket(_))),
            "version": reach.version(),
            "error": (!answered).then(|| reach.to_string()),
            "features": features,
        })
    };
    let probe =
        |result: &Result<(), String>| json!({ "available": result.is_ok(), "error": result.as_ref().err() });
    let missing = |result: &Result<(), Missing>| json!({ "available": result.is_ok(), "error": result.as_ref().err().map(Missing::reason) });
    let ns = &facts.namespaces;
    let mut namespaces: serde_json::Map<String, Value> =
        ns.kinds.iter().map(|(kind, result)| (kind.tag().to_string(), missing(result))).collect();
    let mut user = probe(&ns.user);
    user["probed_as_uid"] = json!(ns.user_probed_as);
    namespaces.insert("user".into(), user);
    namespaces.insert("unprivileged_userns_clone".into(), json!(ns.unprivileged_userns_clone));
    namespaces.insert("max_user_namespaces".into(), json!(ns.max_user_namespaces));
    let outlook = |o: &Outlook| {
        json!({
            "mode": o.backend.name(),
            "reason": o.reason,
            "fails": o.fails,
            "isolations": o.isolations.iter().map(|i| json!({
                "kind": i.kind.tag(),
                "by": i.by,
                "available": i.available.is_ok(),
                "error": i.available.as_ref().err().map(Missing::reason),
            })).collect::<Vec<_>>(),
        })
    };
    let findings = |list: &[Finding]| {
        list.iter().map(|f| json!({ "problem": f.problem, "fix": f.fix })).collect::<Vec<_>>()
    };
    let report = json!({
        "uid": facts.uid,
        "manager": facts.manager.name(),
        "systemd": {
            "running": facts.systemd_running,
            "system": manager(&facts.system),
            "user": manager(&facts.user),
        },
        "caller_loses_in_a_service": facts.lost.map(|lost| lost.to_string()),
        "namespaces": namespaces,
        "cgroup": facts.cgroup.name(),
        "portage": { "uid": facts.portage.uid, "lingering": facts.portage.lingering },
        "phases": assessment.phases.iter().map(|p| json!({
            "phase": p.phase,
            "network": p.decision.network.to_string(),
            "ipc": p.decision.ipc.to_string(),
            "pid": p.decision.pid.to_string(),
            "confined": p.decision.confine,
            "auto": outlook(&p.auto),
            "keep_fds": outlook(&p.keep_fds),
        })).collect::<Vec<_>>(),
        "problems": findings(&assessment.problems),
        "advice": findings(&assessment.advice),
        "ok": assessment.problems.is_empty(),
        "exit_status": assessment.exit_status(),
    });
    let mut text = serde_json::to_string_pretty(&report).context("writing the JSON report")?;
    text.push('\n');
    Ok(text)
}

//! Flatten D-Bus introspection XML into (interface, member, signature) rows, methods
//! written as `IN->OUT`, the same form as phasebox::systemd::proxies::member_signatures.

use std::collections::BTreeMap;

pub type Members = BTreeMap<(String, String), String>;

pub fn flatten(xml: &str) -> Members {
    let node = zbus_xml::Node::from_reader(xml.as_bytes()).expect("valid introspection XML");
    let mut rows = Members::new();
    for iface in node.interfaces() {
        let name = iface.name().to_string();
        for m in iface.methods() {
            let (ins, outs): (Vec<_>, Vec<_>) =
                m.args().iter().partition(|a| a.direction() != Some(zbus_xml::ArgDirection::Out));
            let join =
                |args: Vec<&zbus_xml::Arg>| args.iter().map(|a| a.ty().to_string()).collect::<String>();
            let mut sig = join(ins);
            if !outs.is_empty() {
                sig = format!("{sig}->{}", join(outs));
            }
            rows.insert((name.clone(), m.name().to_string()), sig);
        }
        for s in iface.signals() {
            let sig = s.args().iter().map(|a| a.ty().to_string()).collect();
            rows.insert((name.clone(), s.name().to_string()), sig);
        }
        for p in iface.properties() {
            rows.insert((name.clone(), p.name().to_string()), p.ty().to_string());
        }
    }
    rows
}

/// Our checked-in interface files, merged.
pub fn ours() -> Members {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus-interfaces");
    let mut all = Members::new();
    for entry in std::fs::read_dir(&dir).expect("dbus-interfaces/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xml") {
            all.extend(flatten(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    all
}

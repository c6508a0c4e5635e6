//! The typed proxies use exactly the members, with exactly the signatures, that
//! dbus-interfaces/ declares (tests/systemd.rs checks those against the live systemd).

#[allow(dead_code)]
mod common;

use common::interfaces;

#[test]
fn proxies_match_the_checked_in_interfaces() {
    let ours = interfaces::ours();
    let proxies: interfaces::Members = phasebox::systemd::proxies::member_signatures()
        .into_iter()
        .map(|(iface, member, sig)| ((iface.to_string(), member.to_string()), sig))
        .collect();
    assert_eq!(proxies, ours, "src/systemd/proxies.rs and dbus-interfaces/ disagree");
}

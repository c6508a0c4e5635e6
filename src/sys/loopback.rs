//! Bring `lo` up in a fresh network namespace with portage's addresses: the kernel
//! adds 127.0.0.1/8 and ::1 when lo goes up; 10.0.0.1/8 and fd::1/8 are added so
//! glibc's AI_ADDRCONFIG sees a non-loopback address of each family (fd::1 is
//! 00fd::1, written as portage writes it).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

/// lo is always interface 1 in a new network namespace.
const LO_INDEX: i32 = 1;

pub fn set_up() -> Result<()> {
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("opening a netlink socket");
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    request(&socket, 1, link_up()).context("bringing lo up")?;
    request(&socket, 2, address(libc::AF_INET as u8, 8, &[10, 0, 0, 1]))
        .context("adding 10.0.0.1/8 to lo")?;
    let mut fd1 = [0u8; 16];
    fd1[1] = 0xfd;
    fd1[15] = 1;
    match request(&socket, 3, address(libc::AF_INET6 as u8, 8, &fd1)) {
        // A kernel without IPv6 has no ::1 either: nothing to be on par with.
        Err(e) if is_no_ipv6(&e) => Ok(()),
        other => other.context("adding fd::1/8 to lo"),
    }
}

fn is_no_ipv6(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<io::Error>()
        .and_then(|e| e.raw_os_error())
        .is_some_and(|code| code == libc::EAFNOSUPPORT || code == libc::EOPNOTSUPP || code == libc::EACCES)
}

fn link_up() -> (u16, u16, Vec<u8>) {
    // struct ifinfomsg: family, pad, type, index, flags, change
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    body.extend_from_slice(&LO_INDEX.to_ne_bytes());
    body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    (libc::RTM_NEWLINK, 0, body)
}

fn address(family: u8, prefix: u8, addr: &[u8]) -> (u16, u16, Vec<u8>) {
    const IFA_F_NODAD: u8 = 0x02;
    // struct ifaddrmsg: family, prefixlen, flags, scope, index
    let mut body = vec![family, prefix, IFA_F_NODAD, libc::RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&(LO_INDEX as u32).to_ne_bytes());
    for kind in [libc::IFA_LOCAL, libc::IFA_ADDRESS] {
        let len = (4 + addr.len()) as u16;
        body.extend_from_slice(&len.to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(addr);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    (libc::RTM_NEWADDR, flags, body)
}

/// Send one request and read its acknowledgement.
fn request(socket: &OwnedFd, seq: u32, (kind, extra_flags, body): (u16, u16, Vec<u8>)) -> Result<()> {
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16 | extra_flags).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    // SAFETY: msg is a valid buffer of msg.len() bytes; the kernel is the peer.
    if unsafe { libc::send(socket.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut reply = [0u8; 1024];
    // SAFETY: reply is a writable buffer of its length.
    let n = unsafe { libc::recv(socket.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let n = n as usize;
    if n < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != libc::NLMSG_ERROR as u16 {
        bail!("unexpected netlink reply");
    }
    match i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(-errno).into()),
    }
}

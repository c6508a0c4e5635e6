//! The terminal guard: a seccomp filter, installed on the command just before its
//! execve and inherited by all it starts, that refuses the two ioctls through
//! which a process can put input into a terminal: TIOCSTI (push bytes into its
//! input queue, so the caller's shell runs them once phasebox has exited, outside
//! the sandbox: bubblewrap's CVE-2017-5226) and TIOCLINUX (the same on a virtual
//! console). They fail with EPERM; every other ioctl, job control and Ctrl-C work.
//! The filter is made once, beforehand: installing it makes system calls only.

use libc::{c_int, sock_filter, sock_fprog};

// struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of args[1], the request: the kernel takes it as an unsigned int
/// and ignores the upper half, so the filter must too.
#[cfg(target_endian = "little")]
const REQUEST: u32 = 16 + 8;
#[cfg(target_endian = "big")]
const REQUEST: u32 = 16 + 8 + 4;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The system call numbers of ioctl in each ABI a program of this machine may use:
/// a 64-bit build still runs 32-bit test programs.
#[cfg(target_arch = "x86_64")]
const IOCTLS: &[(u32, &[u32])] = &[
    (0xC000_003E, &[16, 0x4000_0000 | 514]), // x86_64 and x32
    (0x4000_0003, &[54]),                    // i386
];
#[cfg(target_arch = "aarch64")]
const IOCTLS: &[(u32, &[u32])] = &[
    (0xC000_00B7, &[29]), // aarch64
    (0x4000_0028, &[54]), // arm
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the terminal guard knows the system call numbers of x86_64 and aarch64 only");

/// A jump target, resolved once the program is laid out.
#[derive(Clone, Copy, PartialEq)]
enum Label {
    Check,
    Allow,
    Deny,
}

enum Op {
    Load(u32),
    /// If the accumulator equals the value, jump to the label; else go on.
    JumpIf(u32, Label),
    /// If not equal, skip this many instructions (to the next ABI's block).
    SkipUnless(u32, u8),
    Jump(Label),
    Mark(Label),
    Return(u32),
}

/// The filter program, ready to install.
pub struct TerminalGuard {
    filter: Vec<sock_filter>,
}

impl TerminalGuard {
    pub fn new() -> TerminalGuard {
        let mut ops = vec![Op::Load(ARCH)];
        for (arch, numbers) in IOCTLS {
            // This block: Load(NR), one JumpIf per number, Jump(Allow).
            ops.push(Op::SkipUnless(*arch, (numbers.len() + 2) as u8));
            ops.push(Op::Load(NR));
            ops.extend(numbers.iter().map(|&nr| Op::JumpIf(nr, Label::Check)));
            ops.push(Op::Jump(Label::Allow));
        }
        ops.extend([
            // An ABI not listed: no ioctl of it is known to be one.
            Op::Jump(Label::Allow),
            Op::Mark(Label::Check),
            Op::Load(REQUEST),
            Op::JumpIf(libc::TIOCSTI as u32, Label::Deny),
            Op::JumpIf(libc::TIOCLINUX as u32, Label::Deny),
            Op::Mark(Label::Allow),
            Op::Return(libc::SECCOMP_RET_ALLOW),
            Op::Mark(Label::Deny),
            Op::Return(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ]);
        TerminalGuard { filter: assemble(&ops) }
    }

    /// Install the filter on the calling thread. It takes CAP_SYS_ADMIN (root, or
    /// any process in a user namespace phasebox made) or no_new_privs: only a
    /// process with neither gets no_new_privs here. The errno when it fails.
    pub fn install(&self) -> Result<(), c_int> {
        let program = sock_fprog { len: self.filter.len() as u16, filter: self.filter.as_ptr().cast_mut() };
        let install = || {
            // SAFETY: a valid program that outlives the call; the kernel copies it.
            unsafe {
                libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const sock_fprog)
            }
        };
        if install() == 0 {
            return Ok(());
        }
        if nix::errno::Errno::last() == nix::errno::Errno::EACCES {
            // SAFETY: a prctl with plain integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0 && install() == 0 {
                return Ok(());
            }
        }
        Err(nix::errno::Errno::last_raw())
    }
}

impl Default for TerminalGuard {
    fn default() -> TerminalGuard {
        TerminalGuard::new()
    }
}

/// Lay the operations out as BPF, resolving the labels to forward offsets.
fn assemble(ops: &[Op]) -> Vec<sock_filter> {
    let mut at = Vec::new();
    let mut index = 0;
    for op in ops {
        match op {
            Op::Mark(label) => at.push((*label, index)),
            _ => index += 1,
        }
    }
    let target =
        |label: Label| at.iter().find(|(l, _)| *l == label).map(|(_, i)| *i).expect("a marked label");
    let insn = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    let mut program = Vec::new();
    for op in ops {
        let here = program.len();
        let offset = |label: Label| target(label) - here - 1;
        match *op {
            Op::Load(offset) => program.push(insn(BPF_LD_W_ABS, 0, 0, offset)),
            Op::JumpIf(value, label) => program.push(insn(BPF_JEQ_K, offset(label) as u8, 0, value)),
            Op::SkipUnless(value, skip) => program.push(insn(BPF_JEQ_K, 0, skip, value)),
            Op::Jump(label) => program.push(insn(BPF_JA, 0, 0, offset(label) as u32)),
            Op::Return(value) => program.push(insn(BPF_RET_K, 0, 0, value)),
            Op::Mark(_) => {}
        }
    }
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the filter on one system call, as the kernel would.
    fn verdict(filter: &[sock_filter], arch: u32, nr: u32, request: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[24..32].copy_from_slice(&request.to_ne_bytes());
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &filter[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    acc = u32::from_ne_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap())
                }
                BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                BPF_JA => pc += i.k as usize,
                BPF_RET_K => return i.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    // libc's Ioctl is a u64 with glibc, an i32 with musl.
    #[allow(clippy::unnecessary_cast)]
    fn only_tiocsti_and_tioclinux_are_refused_in_every_abi() {
        let guard = TerminalGuard::new();
        let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let allow = libc::SECCOMP_RET_ALLOW;
        let tiocsti = libc::TIOCSTI as u64;
        for (arch, nr) in [(0xC000_003E, 16), (0xC000_003E, 0x4000_0202), (0x4000_0003, 54)] {
            assert_eq!(verdict(&guard.filter, arch, nr, tiocsti), deny, "{arch:#x} {nr}");
            assert_eq!(verdict(&guard.filter, arch, nr, libc::TIOCLINUX as u64), deny);
            // The kernel ignores the upper half of the request, so must the filter.
            assert_eq!(verdict(&guard.filter, arch, nr, tiocsti | 0xdead_0000_0000), deny);
            assert_eq!(verdict(&guard.filter, arch, nr, libc::TIOCGWINSZ as u64), allow);
        }
        // Not an ioctl, though the number is: write(2) on x86_64, ioctl on i386.
        assert_eq!(verdict(&guard.filter, 0xC000_003E, 54, tiocsti), allow);
        assert_eq!(verdict(&guard.filter, 0xC000_003E, 1, tiocsti), allow);
        assert_eq!(verdict(&guard.filter, 0x1234, 16, tiocsti), allow);
    }

    #[test]
    fn an_installed_guard_refuses_tiocsti_with_eperm() {
        // In a child: the filter stays with the process that installs it.
        // SAFETY: the child makes only system calls before _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe {
                let ok = TerminalGuard::new().install().is_ok()
                    && libc::ioctl(0, libc::TIOCSTI, c"x".as_ptr()) == -1
                    && nix::errno::Errno::last() == nix::errno::Errno::EPERM;
                libc::_exit(if ok { 0 } else { 1 })
            },
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}

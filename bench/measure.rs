//! bench_measure: runs a command and prints its wall time, user and system CPU and peak RSS
//! (from wait4) as one line on stderr. A small static launcher, because a child forked from a
//! large process (the Python bench script) inherits that process's peak RSS in ru_maxrss.
use std::process::{exit, Command};
use std::time::Instant;

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: bench_measure PROGRAM [ARG]...");
        exit(2);
    };
    let start = Instant::now();
    let child = match Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("bench_measure: {program}: {e}");
            exit(127);
        }
    };
    let mut status = 0;
    let mut ru = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        maxrss: 0,
        rest: [0; 13],
    };
    // SAFETY: wait4 writes into the two out-pointers, which live for the call.
    let got = unsafe { wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    if got < 0 {
        eprintln!("bench_measure: wait4 failed");
        exit(125);
    }
    let secs = |t: &Timeval| t.sec as f64 + t.usec as f64 / 1e6;
    eprintln!(
        "bench_measure wall={wall:.6} user={:.6} sys={:.6} maxrss_kib={}",
        secs(&ru.utime),
        secs(&ru.stime),
        ru.maxrss
    );
    // Exit like the child did (a signal death becomes 128 + signal, as in a shell).
    let code = if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) };
    exit(code);
}

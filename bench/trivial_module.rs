//! bench_trivial: the smallest Ansible binary module (reads its arguments file, changes
//! nothing). scripts/bench builds it static and pads it to acme_request's size.
use std::io::Write;

fn main() {
    // Ansible passes the path of a JSON arguments file; read it like a real module does.
    let args = std::env::args().nth(1).map(std::fs::read).transpose();
    let reply: &[u8] = match args {
        Ok(_) => b"{\"changed\": false}\n",
        Err(_) => b"{\"failed\": true, \"msg\": \"cannot read the arguments file\"}\n",
    };
    let _ = std::io::stdout().write_all(reply);
}

use std::rc::Rc;

use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn run() {
    let shared = Rc::new(5);
    let _ = gather!(spawn; fetch(1), async move { Ok(*shared) });
}

fn main() {}

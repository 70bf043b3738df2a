use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn run() {
    let _ = gather!(fetch(1), fetch(2));
    // Nothing gather! declares is visible after it.
    let _ = (__gather_b0, __gather_pass, __gather_names);
}

fn main() {}

use gather::gather;

async fn double(n: u32) -> u32 {
    n * 2
}

async fn run() {
    let _ = gather!(for n in 0..3 => double(n));
}

fn main() {}

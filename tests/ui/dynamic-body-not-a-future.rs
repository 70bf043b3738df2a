use gather::gather;

async fn run() {
    let _ = gather!(policy = settle; for n in 0..3 => n * 2);
}

fn main() {}

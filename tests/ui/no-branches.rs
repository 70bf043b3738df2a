use gather::gather;

async fn run() {
    let _ = gather!();
}

fn main() {}

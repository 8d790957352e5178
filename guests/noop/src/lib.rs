//! A task that does nothing: its input back, no host call. It imports only
//! what any task built with the SDK imports, which makes it the guest to set
//! beside another job system's no-op job (`flowfabric bench pool`).

use flowfabric_guest::{export_task, Task, TaskError};

struct Noop;

impl Task for Noop {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, TaskError> {
        Ok(input)
    }
}

export_task!(Noop);

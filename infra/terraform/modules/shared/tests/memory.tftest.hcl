# `terraform test` in plan mode: the module has no provider, so this runs offline
# (`make lint-terraform`). What the functions and the workers must agree on about memory.

variables {
  # Auth is on by default and then needs at least one key hash (sha256 of "test key").
  api_key_hashes    = ["fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"]
  nats_cluster_size = 3
}

# Submit computes the widest statevector it admits from [worker] memory_budget_mb: a
# function without the workers' budget uses the code's default (2048 MiB) and refuses
# 28-qubit circuits the workers were sized for (issue 16).
run "functions_get_the_workers_memory_budget" {
  command = plan

  variables {
    max_qubits = 28
  }

  assert {
    condition     = lookup(output.function_env, "QMILL_WORKER__MEMORY_BUDGET_MB", "missing") == output.worker_env["QMILL_WORKER__MEMORY_BUDGET_MB"]
    error_message = "function_env must carry the workers' QMILL_WORKER__MEMORY_BUDGET_MB."
  }

  # 16 x 2^28 bytes = 4096 MiB per slot, two slots.
  assert {
    condition     = output.memory_budget_mb == 8192
    error_message = "memory_budget_mb should hold two 28-qubit statevectors."
  }

  assert {
    condition     = output.function_env["QMILL_LIMITS__MAX_QUBITS"] == "28"
    error_message = "The functions must see the workers' max_qubits."
  }
}

# compose measured ~60 MiB + 335 MiB per parse process and gives submit (2 processes)
# 1536M; a 512Mi or 1Gi function is killed parsing a large program.
run "function_memory_follows_the_measured_need" {
  command = plan

  assert {
    condition     = output.function_memory_mib == 1536
    error_message = "Two parse processes need 1536 MiB (compose's submit limit), got ${output.function_memory_mib}."
  }
}

run "function_memory_grows_with_the_parse_processes" {
  command = plan

  variables {
    function_workers = 4
  }

  assert {
    condition     = output.function_memory_mib >= 60 + 4 * 335 && output.function_memory_mib % 256 == 0
    error_message = "Four parse processes need at least 60 + 4 x 335 MiB, in 256 MiB steps."
  }
}

# Cloud Run instances have at most 32 GiB: the plan fails at the output's precondition.
run "a_worker_that_does_not_fit_the_platform_is_refused" {
  command = plan

  variables {
    max_qubits              = 30
    platform_max_memory_mib = 32768
  }

  expect_failures = [output.worker_memory_mib]
}

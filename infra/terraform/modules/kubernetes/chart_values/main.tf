# The values of the NATS and Valkey charts, computed without a provider so that tests
# can evaluate them with Terraform itself and hand them to Helm's lint and render.
locals {
  # Go's soft memory limit: the garbage collector works harder near it instead of the
  # kernel killing nats-server at the container limit. 10% stays for what Go does not
  # count (stacks, cgo, the page cache of the file store is the kernel's anyway).
  nats_gomemlimit = "${floor(var.nats_memory_mib * 0.9)}MiB"

  # One scheduling rule per topology key (the chart adds its pods' selector labels).
  # Hostname: never two servers of a replicated stream on one node. Zone: only when the
  # nodes carry topology.kubernetes.io/zone (cloud clusters do); a node without the label
  # is not a candidate under DoNotSchedule, so a single-zone test cluster keeps it soft.
  nats_topology_spread = {
    "kubernetes.io/hostname" = {
      maxSkew           = 1
      whenUnsatisfiable = "DoNotSchedule"
    }
    "topology.kubernetes.io/zone" = {
      maxSkew           = 1
      whenUnsatisfiable = var.spread_across_zones ? "DoNotSchedule" : "ScheduleAnyway"
    }
  }

  nats = {
    fullnameOverride = var.nats_name
    config = {
      cluster = {
        enabled  = var.nats_replicas > 1
        replicas = var.nats_replicas
      }
      jetstream = {
        enabled = true
        fileStore = {
          enabled = true
          pvc = merge(
            { enabled = true, size = var.nats_storage_size },
            var.storage_class == null ? {} : { storageClassName = var.storage_class },
          )
        }
        memoryStore = { enabled = false }
        # fsync every write before the publish is acknowledged (constants.NATS_SYNC_INTERVAL).
        merge = { sync_interval = local.nats_sync_interval }
      }
      monitor = {
        enabled = true
        port    = local.nats_monitor_port
      }
      nats = {
        port = local.nats_client_port
      }
      # Clients must log in; the password comes from a Secret through the container's
      # environment ("<< >>" leaves $NATS_PASSWORD unquoted, so nats-server reads the
      # variable). No accounts: everything stays in "$G", the account KEDA reads.
      merge = {
        authorization = {
          user     = var.nats_user
          password = "<< $NATS_PASSWORD >>"
        }
      }
    }
    container = {
      image = { tag = var.nats_image_tag }
      env = {
        GOMEMLIMIT = local.nats_gomemlimit
        NATS_PASSWORD = {
          valueFrom = {
            secretKeyRef = { name = var.nats_password_secret, key = var.nats_password_key }
          }
        }
      }
      merge = {
        resources = {
          requests = { cpu = "250m", memory = "${var.nats_memory_mib}Mi" }
          limits   = { memory = "${var.nats_memory_mib}Mi" }
        }
      }
    }
    podTemplate = {
      topologySpreadConstraints = local.nats_topology_spread
    }
    podDisruptionBudget = { enabled = true }
    natsBox             = { enabled = false }
  }

  # Valkey's own cap on its data, below the container limit: an append-only-file rewrite
  # forks (copy-on-write pages), and client buffers and replication live outside
  # maxmemory, so a quarter of the container stays free for them.
  redis_maxmemory_mib = floor(var.redis_memory_mib * 0.75)

  valkey_config = join("\n", [
    # Append-only file: every write is fsynced before it is answered (constants.REDIS_APPENDFSYNC).
    "appendonly yes",
    "appendfsync ${local.redis_appendfsync}",
    "save 900 1",
    # Task records all carry a TTL: an eviction policy would drop live tasks when memory
    # is short. noeviction refuses the write instead (the functions answer 503).
    "maxmemory ${local.redis_maxmemory_mib}mb",
    "maxmemory-policy noeviction",
    "",
  ])

  valkey = {
    fullnameOverride = var.redis_name
    image            = { tag = var.valkey_image_tag }
    service          = { port = local.redis_port }
    # One pod on a ReadWriteOnce volume: Recreate stops the old pod before the new one
    # starts, where RollingUpdate would leave the new pod waiting for the volume.
    deploymentStrategy = "Recreate"
    dataStorage = merge(
      { enabled = true, requestedSize = var.redis_storage_size, keepPvc = true },
      var.storage_class == null ? {} : { className = var.storage_class },
    )
    auth = {
      enabled             = true
      usersExistingSecret = var.valkey_users_secret
      aclUsers = {
        default = { permissions = "~* &* +@all" }
      }
    }
    valkeyConfig = local.valkey_config
    resources = {
      requests = { cpu = "250m", memory = "${var.redis_memory_mib}Mi" }
      limits   = { memory = "${var.redis_memory_mib}Mi" }
    }
  }
}

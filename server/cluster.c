/*
 * cluster.c - what a shard says about sharding in INFO: simdr-server has no
 * cluster mode of its own; it runs as one shard behind a proxy (twemproxy,
 * scripts/cluster.sh, docs/CLUSTER.md) that hashes each key to a shard. The
 * commands listed here act on the shard that receives them only, so through
 * a proxy they would see or change a fraction of the data: twemproxy refuses
 * them (it closes the connection), and a client sending them to shards
 * directly must know that.
 */
#include "server.h"

/* Commands without keys, or whose keys may live on different shards (RENAME,
 * COPY and MSETNX are correct only when their keys share a {hash tag}). */
static const char shard_local_commands[] =
    "keys,scan,randomkey,dbsize,flushdb,flushall,swapdb,select,multi,exec,discard,watch,"
    "unwatch,rename,renamenx,copy,msetnx,info,config,client,command,save,bgsave,lastsave,"
    "bgrewriteaof,time,debug,wait,shutdown,replicaof";

void cluster_info(struct evbuffer *b) {
    evbuffer_add_printf(b, "cluster_enabled:0\r\nsimdr_shard_local_commands:%s\r\n",
                        shard_local_commands);
}

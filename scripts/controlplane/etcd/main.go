// Command etcd is etcd's own server entry point, built from go.etcd.io/etcd/server/v3 at the
// version pinned in ../versions.env (the module publishes the server, not the etcd binary).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

// Command etcd is the etcd server, built from etcd's Go modules so Herald's
// operator tests need no release download. It is etcd's own entry point: the
// server module's main package does exactly this.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

package main

import (
	"fmt"
	"os/user"
	"strconv"
)

func groupID(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group id %q is not numeric", g.Gid)
	}
	return n, nil
}

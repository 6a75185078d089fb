package state

import (
	"errors"

	"github.com/butterfly-go/butterfly/internal/model"
)

// load reads the state stored at path for the tests, as Open does but
// without taking it over: the snapshot file and the journal
// next to it ("<path>.journal", written by a Store), without changing
// either (a torn last journal record is ignored, not removed). A missing
// snapshot and journal give an empty state and no error. A snapshot or
// journal that cannot be parsed is moved aside (see CorruptError) and
// load returns an empty state with a *CorruptError. Temporary files left
// by an interrupted Save are removed. Other errors (unreadable file, a
// version newer than this program's) are returned with an empty state and
// leave the files in place.
//
// The vNICs and security groups come back sorted by id (the order of
// model.Store.State), whatever their order in the files.
//
// load may run while a Store appends to the journal; it retries when a
// concurrent compaction makes snapshot and journal look inconsistent.
func load(path string) (model.State, error) {
	removeStaleTemps(path)
	var (
		ld  *loaded
		err error
	)
	for range 3 {
		ld, err = readStore(path)
		if _, bad := errors.AsType[*corruption](err); !bad {
			break
		}
	}
	if c, bad := errors.AsType[*corruption](err); bad {
		return empty(), moveAside(path, c)
	}
	if err != nil {
		return empty(), err
	}
	return ld.state(), nil
}

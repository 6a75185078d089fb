package model

import (
	"slices"
	"testing"
)

// TestInsertDeleteAt: the copies a group's lists are changed through hold
// the right elements and leave the list they came from (which published
// versions of the group still hold) untouched.
func TestInsertDeleteAt(t *testing.T) {
	for _, tc := range []struct {
		in      []int
		i       int
		ins     []int // in with 9 inserted at i
		deleted []int // in without element i
	}{
		{[]int{1}, 0, []int{9, 1}, nil},
		{[]int{1, 2, 3}, 0, []int{9, 1, 2, 3}, []int{2, 3}},
		{[]int{1, 2, 3}, 1, []int{1, 9, 2, 3}, []int{1, 3}},
		{[]int{1, 2, 3}, 2, []int{1, 2, 9, 3}, []int{1, 2}},
	} {
		orig := slices.Clone(tc.in)
		if got := insertAt(tc.in, tc.i, 9); !slices.Equal(got, tc.ins) {
			t.Errorf("insertAt(%v, %d, 9) = %v, want %v", tc.in, tc.i, got, tc.ins)
		}
		if got := deleteAt(tc.in, tc.i); !slices.Equal(got, tc.deleted) || (got == nil) != (tc.deleted == nil) {
			t.Errorf("deleteAt(%v, %d) = %#v, want %#v", tc.in, tc.i, got, tc.deleted)
		}
		if !slices.Equal(tc.in, orig) {
			t.Errorf("the list changed: %v, was %v", tc.in, orig)
		}
	}
	if got := insertAt([]int(nil), 0, 9); !slices.Equal(got, []int{9}) {
		t.Errorf("insertAt(nil, 0, 9) = %v, want [9]", got)
	}
}

//go:build linux && amd64 && !race

#include "textflag.h"

// func bumpPlain(v *uint64)
TEXT ·bumpPlain(SB), NOSPLIT, $0-8
	MOVQ v+0(FP), AX
	INCQ (AX)
	RET

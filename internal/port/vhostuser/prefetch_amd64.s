#include "textflag.h"

// func prefetchLines(lines []uintptr, write bool)
TEXT ·prefetchLines(SB), NOSPLIT, $0-25
	MOVQ lines_base+0(FP), SI
	MOVQ lines_len+8(FP), CX
	MOVBLZX write+24(FP), DX
	TESTQ CX, CX
	JEQ done
	TESTB DL, DL
	JNE wloop
rloop:
	MOVQ (SI), AX
	PREFETCHT0 (AX)
	ADDQ $8, SI
	DECQ CX
	JNE rloop
	RET
wloop:
	MOVQ (SI), AX
	// PREFETCHW (AX), which the Go assembler does not know
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08
	ADDQ $8, SI
	DECQ CX
	JNE wloop
done:
	RET

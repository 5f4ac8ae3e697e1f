/* Entry of every Flit test guest: rdi = vCPU index, rsi = boot info. */
	.section .text.start, "ax"
	.globl _start
	.type _start, @function
_start:
	xor %ebp, %ebp
	and $-16, %rsp
	call rt_start
1:	jmp 1b /* rt_start never returns */
	.size _start, . - _start
	.section .note.GNU-stack, "", @progbits

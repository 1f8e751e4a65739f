"""Operations endpoints: health, metrics, and (later) the debugger, delivery view and replay."""

"""To-do lists: add, update (rename, complete) and delete items."""

from __future__ import annotations

from homeassistant.components.todo import (
    TodoItem,
    TodoItemStatus,
    TodoListEntity,
    TodoListEntityFeature,
)

from .entity import VirtualEntity, added

_F = TodoListEntityFeature


class VirtualTodoList(VirtualEntity, TodoListEntity):
    _attr_supported_features = _F.CREATE_TODO_ITEM | _F.UPDATE_TODO_ITEM | _F.DELETE_TODO_ITEM

    def restore(self) -> None:
        self.serial = 0
        self._attr_todo_items = []
        for summary in self.spec.get("items", []):
            self._attr_todo_items.append(self._item(summary))

    def _item(self, summary: str | None, status: str = TodoItemStatus.NEEDS_ACTION) -> TodoItem:
        self.serial += 1
        return TodoItem(summary=summary, uid=str(self.serial), status=TodoItemStatus(status))

    async def async_create_todo_item(self, item: TodoItem) -> None:
        self._attr_todo_items = [*(self.todo_items or []), self._item(item.summary)]
        self.changed()

    async def async_update_todo_item(self, item: TodoItem) -> None:
        self._attr_todo_items = [
            item if old.uid == item.uid else old for old in self.todo_items or []
        ]
        self.changed()

    async def async_delete_todo_items(self, uids: list[str]) -> None:
        self._attr_todo_items = [i for i in self.todo_items or [] if i.uid not in uids]
        self.changed()


async_setup_entry = added(VirtualTodoList, "todo")

// The new-blast form: a candidate's button writes that place back into the line that named it,
// then asks for the preview again (the form's htmx trigger listens for "input").
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.pick");
  if (!button) {
    return;
  }
  var field = document.querySelector('textarea[name="' + button.dataset.field + '"]');
  if (!field) {
    return;
  }
  var lines = field.value.split("\n").map(function (line) {
    return line.trim() === button.dataset.query ? button.dataset.choice : line;
  });
  field.value = lines.join("\n");
  field.dispatchEvent(new Event("input", { bubbles: true }));
});

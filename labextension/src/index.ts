/**
 * %%bpf cells highlighted as C, in JupyterLab 4 and Notebook 7.
 *
 * A notebook gives every code cell its kernel's language (Python): C's keywords
 * read as names and an apostrophe in a C comment starts a string. This plugin
 * registers "BPF C" (CodeMirror's C mode, the %%bpf line as a magic, the
 * kernel headers' integer types as types), gives it to each code cell whose
 * first line is %%bpf, and gives back the notebook's language when that line
 * goes away.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import type { ICellModel } from '@jupyterlab/cells';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker, Notebook } from '@jupyterlab/notebook';
import {
  LanguageSupport,
  StreamLanguage,
  StreamParser,
  StringStream
} from '@codemirror/language';
import { c } from '@codemirror/legacy-modes/mode/clike';

const MIME = 'text/x-bpfnb-c';

// IPython drops blank lines and common indentation before looking for the
// cell magic, so a cell is %%bpf when its first non-blank line starts so.
const BPF_CELL = /^\s*%%bpf(?:\s|$)/;

// vmlinux.h / linux/types.h integer types: the C mode knows only int, long,
// ... and *_t names, and would show `u32 pid` as two variables.
const KERNEL_TYPES = /^(?:__)?(?:[us](?:8|16|32|64|128)|be16|be32|be64|le16|le32|le64|wsum)$/;

// the C mode's state: plain fields and an immutable context chain
type CState = Record<string, unknown>;
interface IState {
  c: CState;
  // false until the first token: only that line can be the %%bpf magic
  started: boolean;
}

const bpfC: StreamParser<IState> = {
  name: 'bpf-c',
  startState: (indentUnit: number) => ({
    c: c.startState!(indentUnit) as CState,
    started: false
  }),
  copyState: (state: IState) => ({
    c: { ...state.c },
    started: state.started
  }),
  token(stream: StringStream, state: IState): string | null {
    if (!state.started) {
      state.started = true;
      if (stream.match(/^\s*%%\S+/)) {
        stream.skipToEnd();
        return 'meta';
      }
    }
    const style = c.token(stream, state.c);
    if (style === 'variable' && KERNEL_TYPES.test(stream.current())) {
      return 'type';
    }
    return style;
  },
  blankLine: (state: IState, indentUnit: number) =>
    c.blankLine?.(state.c, indentUnit),
  indent: (state: IState, textAfter: string, context) =>
    c.indent ? c.indent(state.c, textAfter, context) : null,
  languageData: c.languageData
};

function isBpfCell(source: string): boolean {
  return BPF_CELL.test(source.slice(0, 200));
}

/** Keeps the code cells of one notebook on the right language. */
function follow(notebook: Notebook): void {
  const watched = new WeakSet<object>();

  const update = (cell: ICellModel): void => {
    const bpf = isBpfCell(cell.sharedModel.getSource());
    if (bpf && cell.mimeType !== MIME) {
      cell.mimeType = MIME;
    } else if (!bpf && cell.mimeType === MIME) {
      cell.mimeType = notebook.codeMimetype;
    }
  };

  const watch = (cell: ICellModel): void => {
    if (cell.type !== 'code' || watched.has(cell)) {
      return;
    }
    watched.add(cell);
    cell.sharedModel.changed.connect((_, change) => {
      if (change.sourceChange) {
        update(cell);
      }
    });
    // The notebook sets every code cell to the kernel's language when the
    // cell is shown and when the kernel's language info arrives.
    cell.mimeTypeChanged.connect(() => update(cell));
    update(cell);
  };

  const attach = (): void => {
    const model = notebook.model;
    if (!model) {
      return;
    }
    for (const cell of model.cells) {
      watch(cell);
    }
    model.cells.changed.connect((_, args) => {
      for (const cell of args.newValues) {
        watch(cell);
      }
    });
  };

  notebook.modelChanged.connect(attach);
  attach();
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'bpfnb-highlight:plugin',
  description: '%%bpf cells highlighted as C',
  autoStart: true,
  requires: [IEditorLanguageRegistry, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    languages: IEditorLanguageRegistry,
    notebooks: INotebookTracker
  ): void => {
    languages.addLanguage({
      name: 'BPF C',
      mime: MIME,
      support: new LanguageSupport(StreamLanguage.define(bpfC))
    });
    notebooks.widgetAdded.connect((_, panel) => follow(panel.content));
    notebooks.forEach(panel => follow(panel.content));
  }
};

export default plugin;
